//! Maps the carrier's status words to the three delivery statuses the business reports on.
//!
//! The table follows the story's reference table, not its pseudocode: TIMEOUT means "no delivery confirmation
//! yet" (PENDING, not FAILED) and BOUNCED is a failure.

use std::fmt;

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

/// The result of mapping one carrier word.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mapped {
    pub status: DeliveryStatus,
    /// False for a word outside the table; it maps to PENDING and is counted and logged.
    pub known: bool,
}

/// Maps a carrier status word, ignoring case and surrounding whitespace.
pub fn map_status(word: &str) -> Mapped {
    let known = |status| Mapped {
        status,
        known: true,
    };
    match word.trim().to_ascii_uppercase().as_str() {
        "DELIVERED" => known(DeliveryStatus::Delivered),
        "FAILED" | "REJECTED" | "BOUNCED" | "UNDELIVERABLE" => known(DeliveryStatus::Failed),
        "PENDING" | "QUEUED" | "SENT" | "TIMEOUT" | "NO_STATUS" => known(DeliveryStatus::Pending),
        _ => Mapped {
            status: DeliveryStatus::Pending,
            known: false,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_table() {
        use DeliveryStatus::*;
        let table = [
            ("DELIVERED", Delivered),
            ("FAILED", Failed),
            ("REJECTED", Failed),
            ("BOUNCED", Failed),
            ("UNDELIVERABLE", Failed),
            ("PENDING", Pending),
            ("QUEUED", Pending),
            ("SENT", Pending),
            ("TIMEOUT", Pending),
            ("NO_STATUS", Pending),
        ];
        for (word, status) in table {
            assert_eq!(
                map_status(word),
                Mapped {
                    status,
                    known: true
                },
                "{word}"
            );
        }
    }

    #[test]
    fn case_and_whitespace_do_not_matter() {
        assert_eq!(map_status("delivered").status, DeliveryStatus::Delivered);
        assert_eq!(map_status(" Bounced ").status, DeliveryStatus::Failed);
        assert_eq!(map_status("timeout").status, DeliveryStatus::Pending);
        assert!(map_status("No_Status").known);
    }

    #[test]
    fn unknown_words_are_pending_and_flagged() {
        for word in ["ACCEPTD", "", "EXPIRED", "DELIVERED!"] {
            assert_eq!(
                map_status(word),
                Mapped {
                    status: DeliveryStatus::Pending,
                    known: false
                },
                "{word:?}"
            );
        }
    }

    #[test]
    fn only_delivered_and_failed_are_final() {
        assert!(DeliveryStatus::Delivered.is_final());
        assert!(DeliveryStatus::Failed.is_final());
        assert!(!DeliveryStatus::Pending.is_final());
    }
}
