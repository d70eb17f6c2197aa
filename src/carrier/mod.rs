//! Talking to the carrier. The cycle sees only [`StatusSource`]: "what does the carrier say about this batch /
//! this message". Wire formats live in profiles ([`generic`] today; others beside it), the HTTP transport with
//! its timeouts and retries in [`http`].

pub mod generic;
pub mod http;

use std::fmt;

/// What the carrier reports about one message, as it said it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    pub tracking_id: String,
    pub status: String,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub status_updated_at: Option<String>,
}

/// Why a question to the carrier got no answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FetchError {
    /// 401 or 403: every further request would fail too.
    CredentialsRejected { status: u16 },
    /// The request failed and retrying did not help: the carrier or the network is unwell.
    Failed { attempts: u32, reason: String },
    /// The carrier answered this question with a permanent refusal: a 4xx other than 401/403/404/408/429 (400,
    /// 410 Gone after its retention, 422), or an answer about another message. Asking again cannot help; for one
    /// message it is that message's outcome.
    Refused {
        /// The failure code to record (`HTTP 410`); `None` for an answer about another message.
        code: Option<String>,
        reason: String,
    },
    /// The answer cannot be used however often it is asked for: a redirect, a body over the size limit, a listing
    /// that pages without end or past the page cap.
    Unusable { reason: String },
    /// The cycle's deadline came first.
    Deadline,
    /// The cycle was stopped for another reason (credentials rejected on another worker).
    Stopped,
}

impl fmt::Display for FetchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FetchError::CredentialsRejected { status } => {
                write!(f, "carrier rejected the credentials (HTTP {status})")
            }
            FetchError::Failed {
                attempts: 1,
                reason,
            } => write!(f, "{reason}"),
            FetchError::Failed { attempts, reason } => {
                write!(f, "{reason} (after {attempts} attempts)")
            }
            FetchError::Refused { reason, .. } | FetchError::Unusable { reason } => {
                f.write_str(reason)
            }
            FetchError::Deadline => f.write_str("cycle deadline reached"),
            FetchError::Stopped => f.write_str("cycle stopped"),
        }
    }
}

impl std::error::Error for FetchError {}

impl FetchError {
    /// Whether asking the same question again cannot help (a batch then falls back to one-by-one lookups).
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            FetchError::Refused { .. } | FetchError::Unusable { .. }
        )
    }
}

/// A batch listing, all pages.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Listing {
    pub reports: Vec<Report>,
    /// Entries that could not be read, described (their messages are asked for one by one).
    pub malformed: Vec<String>,
}

/// The narrow interface between the cycle and a carrier.
pub trait StatusSource: Sync {
    /// Every message the carrier lists for a batch, all pages; `None` when the carrier does not know the batch.
    fn batch(&self, batch_id: &str) -> Result<Option<Listing>, FetchError>;

    /// One message; `None` when the carrier does not know it.
    fn message(&self, tracking_id: &str) -> Result<Option<Report>, FetchError>;
}
