//! The three delivery statuses the business reports on. Which carrier words mean which is the carrier's table
//! (`carrier::table`).

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
