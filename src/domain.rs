//! The domain: due messages, submissions, poll records, statuses and failure categories, which the cycle, the
//! intake, the carrier and the store all speak. It depends on no other module of the crate.

use std::fmt;

use chrono::{DateTime, Utc};

/// The status recorded in the audit trail.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DeliveryStatus {
    Delivered,
    Failed,
    Pending,
}

impl DeliveryStatus {
    pub const fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Delivered => "DELIVERED",
            DeliveryStatus::Failed => "FAILED",
            DeliveryStatus::Pending => "PENDING",
        }
    }

    /// DELIVERED and FAILED end a message's tracking: nothing polls or overwrites it afterwards.
    pub const fn is_final(self) -> bool {
        !matches!(self, DeliveryStatus::Pending)
    }
}

impl fmt::Display for DeliveryStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a FAILED message failed, in the business's terms.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Category {
    InvalidNumber,
    NetworkError,
    /// Blocked, filtered, spam, opted out.
    CarrierError,
    Undeliverable,
    Unknown,
}

impl Category {
    pub const ALL: [Category; 5] = [
        Category::InvalidNumber,
        Category::NetworkError,
        Category::CarrierError,
        Category::Undeliverable,
        Category::Unknown,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Category::InvalidNumber => "INVALID_NUMBER",
            Category::NetworkError => "NETWORK_ERROR",
            Category::CarrierError => "CARRIER_ERROR",
            Category::Undeliverable => "UNDELIVERABLE",
            Category::Unknown => "UNKNOWN",
        }
    }

    pub fn parse(s: &str) -> Option<Category> {
        Category::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

impl fmt::Display for Category {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One message due for a poll.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DueMessage {
    pub tracking_id: String,
    pub customer_id: Option<String>,
    pub phone_number: Option<String>,
    pub batch_id: Option<String>,
    pub submitted_at: DateTime<Utc>,
    /// Polls so far; this poll is number `polls + 1`.
    pub polls: i64,
    /// Not tracked yet (read from sms_submissions in this cycle): its tracking row is written with its first
    /// result.
    pub new: bool,
}

/// How the messages without a batch are cut into jobs: as many as one bulk question covers well, and for a
/// carrier listed by time, one job per minute of submission (the minute its listing is asked for).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoneJobs {
    /// Messages per job, at most.
    pub chunk: usize,
    /// A job holds messages submitted in one minute only.
    pub by_minute: bool,
}

impl LoneJobs {
    /// Jobs of `chunk` messages, whenever they were submitted.
    pub const fn of(chunk: usize) -> LoneJobs {
        LoneJobs {
            chunk,
            by_minute: false,
        }
    }
}

impl DueMessage {
    /// The minute of its submission (Unix minutes).
    pub fn minute(&self) -> i64 {
        self.submitted_at.timestamp().div_euclid(60)
    }
}

/// Where a message's tracking is: open (polled at its slots), or ended, and how.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TrackState {
    Open,
    Delivered,
    Failed,
    /// Ended without a final status: still pending after 72 hours, final without a receipt, or closed.
    Unconfirmed,
    /// Taken in without a usable submitted_at: never polled.
    Invalid,
    /// First seen after its tracking window: never polled.
    TooOld,
}

impl TrackState {
    pub const ALL: [TrackState; 6] = [
        TrackState::Open,
        TrackState::Delivered,
        TrackState::Failed,
        TrackState::Unconfirmed,
        TrackState::Invalid,
        TrackState::TooOld,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            TrackState::Open => "OPEN",
            TrackState::Delivered => "DELIVERED",
            TrackState::Failed => "FAILED",
            TrackState::Unconfirmed => "UNCONFIRMED",
            TrackState::Invalid => "INVALID",
            TrackState::TooOld => "TOO_OLD",
        }
    }

    /// The state a stored word names.
    pub fn parse(word: &str) -> Option<TrackState> {
        TrackState::ALL.into_iter().find(|s| s.as_str() == word)
    }
}

/// One poll result, ready to be written: an audit row plus the message's new tracking state.
#[derive(Clone, Debug)]
pub struct PollRecord<'a> {
    pub message: &'a DueMessage,
    /// A poll, or a closing entry (tracking ends without an answer; `failure_reason` says why).
    pub entry: Entry,
    pub status: DeliveryStatus,
    /// The carrier's word; `None` when the carrier did not know the message.
    pub carrier_status: Option<&'a str>,
    pub failure_code: Option<&'a str>,
    pub failure_reason: Option<&'a str>,
    /// Why a FAILED message failed, from its failure code; `None` for any other status.
    pub failure_category: Option<Category>,
    /// The carrier's status time in the stored UTC form, when the status is final.
    pub confirmed_at: Option<String>,
    pub state: TrackState,
    pub next_due_at: Option<DateTime<Utc>>,
}

impl PollRecord<'_> {
    /// The note a closing entry leaves on the message (why tracking ended without an answer); `None` for a poll.
    pub fn note(&self) -> Option<&str> {
        match self.entry {
            Entry::Poll => None,
            Entry::Close => self.failure_reason,
        }
    }
}

/// What an audit row is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Entry {
    /// The carrier's answer to a poll.
    Poll,
    /// Tracking ended without an answer (after the +72h slot, or by hand).
    Close,
}

impl Entry {
    pub const fn as_str(self) -> &'static str {
        match self {
            Entry::Poll => "poll",
            Entry::Close => "close",
        }
    }
}

/// A row of sms_submissions, as the poller reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Submission {
    pub tracking_id: Option<String>,
    pub customer_id: Option<String>,
    pub phone_number: Option<String>,
    pub batch_id: Option<String>,
    /// Parsed, or why it cannot be.
    pub submitted_at: Result<DateTime<Utc>, String>,
    /// Whether the poller tracks the tracking id already.
    pub tracked: bool,
    /// For a row without a tracking id, how the store names it in the log (SQLite: `rowid 4`).
    pub place: Option<String>,
}

impl Submission {
    /// Whether a row with this tracking id can be tracked at all.
    pub fn trackable(tracking_id: Option<&str>) -> bool {
        tracking_id.is_some_and(|t| !t.trim().is_empty())
    }
}

/// A submission to start tracking without polling it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Intake {
    pub tracking_id: String,
    pub customer_id: Option<String>,
    pub phone_number: Option<String>,
    pub batch_id: Option<String>,
    pub submitted_at: Option<DateTime<Utc>>,
    pub kind: IntakeKind,
}

impl Intake {
    /// A due message to be polled with the tracked messages of this cycle, instead of as a new one.
    pub fn due(m: DueMessage) -> Intake {
        Intake {
            tracking_id: m.tracking_id,
            customer_id: m.customer_id,
            phone_number: m.phone_number,
            batch_id: m.batch_id,
            submitted_at: Some(m.submitted_at),
            kind: IntakeKind::Due,
        }
    }
}

/// How a submission is taken in without a poll.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IntakeKind {
    /// Due now: OPEN at its first slot, polled with the tracked messages.
    Due,
    /// Dated in the future: OPEN, first due two hours after that.
    Future,
    /// Its submitted_at cannot be used: INVALID, with the reason.
    Invalid(String),
    /// First seen after its tracking window: TOO_OLD, with the reason.
    TooOld(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_delivered_and_failed_are_final() {
        assert!(DeliveryStatus::Delivered.is_final());
        assert!(DeliveryStatus::Failed.is_final());
        assert!(!DeliveryStatus::Pending.is_final());
    }
}
