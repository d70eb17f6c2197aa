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
    /// The request failed and retrying did not help (or cannot help: a 4xx, a redirect).
    Failed { attempts: u32, reason: String },
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
            FetchError::Deadline => f.write_str("cycle deadline reached"),
            FetchError::Stopped => f.write_str("cycle stopped"),
        }
    }
}

impl std::error::Error for FetchError {}

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
