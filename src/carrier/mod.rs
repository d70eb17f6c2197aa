//! Talking to the carrier. The cycle sees only [`Carrier`]: "what does the carrier say about these due
//! messages", answered with reports keyed by the poller's own tracking ids.
//!
//! Each provider is a [`Profile`] in its own file: its authentication, requests, paging, response parsing,
//! matching of answers to tracking ids, retention and rate limit. Its status words and failure codes are data, in
//! [`table`]. The HTTP transport with its timeouts and retries is [`http`]. Adding a provider is one file here,
//! one table in `tables/`, one sandbox dialect and its tests.

pub mod generic;
pub mod http;
pub mod infobip;
pub mod sinch;
pub mod table;
pub mod telnyx;
pub mod twilio;
pub mod vonage;
pub(crate) mod wire;

pub use wire::MAX_PAGES;

use std::fmt;
use std::time::Duration;

use anyhow::{Result, bail};
use chrono::TimeDelta;

use self::http::{Auth, Http};
use crate::domain::DueMessage;
use crate::redact::mask_owned;

/// The providers `--carrier` accepts.
pub const PROVIDERS: [&str; 6] = ["generic", "twilio", "vonage", "sinch", "infobip", "telnyx"];

/// What the carrier reports about one message, as it said it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// The poller's tracking id of the message (the profile matches the carrier's answer to it).
    pub tracking_id: String,
    /// The carrier's status word.
    pub status: String,
    /// The family of the status word, where the provider has them (Infobip's `status.groupName`).
    pub status_group: Option<String>,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    /// The family of the error code (Infobip's `error.groupName`).
    pub error_group: Option<String>,
    /// Whether the carrier calls the error permanent (Infobip's `error.permanent`).
    pub permanent: Option<bool>,
    pub status_updated_at: Option<String>,
}

/// Why a question to the carrier got no answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FetchError {
    /// 401 or 403: every further request would fail too.
    CredentialsRejected { status: u16 },
    /// The request failed and retrying did not help: the carrier or the network is unwell.
    Failed { attempts: u32, reason: String },
    /// The carrier asked for a pause (429 with `Retry-After`) longer than the time left before the cycle's
    /// deadline: a failed request, but the poller's deadline, not the carrier's failure.
    Postponed { reason: String },
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
            FetchError::Refused { reason, .. }
            | FetchError::Unusable { reason }
            | FetchError::Postponed { reason } => f.write_str(reason),
            FetchError::Deadline => f.write_str("cycle deadline reached"),
            FetchError::Stopped => f.write_str("cycle stopped"),
        }
    }
}

impl std::error::Error for FetchError {}

impl FetchError {
    /// The same error with `clean` applied to its texts.
    fn map_text(self, clean: &impl Fn(String) -> String) -> FetchError {
        match self {
            FetchError::Failed { attempts, reason } => FetchError::Failed {
                attempts,
                reason: clean(reason),
            },
            FetchError::Postponed { reason } => FetchError::Postponed {
                reason: clean(reason),
            },
            FetchError::Refused { code, reason } => FetchError::Refused {
                code: code.map(clean),
                reason: clean(reason),
            },
            FetchError::Unusable { reason } => FetchError::Unusable {
                reason: clean(reason),
            },
            other => other,
        }
    }

    /// Whether the carrier failed to answer (it kept failing, or its answer cannot be used), as opposed to the
    /// poller's own side failing (credentials it rejected, the cycle's deadline, a stop). Only the carrier
    /// failing for a message through its +72h slot ends the message's tracking without an answer: a token
    /// rotated at the wrong moment must not close messages that a re-run with the right one would have asked
    /// about.
    pub fn is_carriers_failure(&self) -> bool {
        matches!(
            self,
            FetchError::Failed { .. } | FetchError::Refused { .. } | FetchError::Unusable { .. }
        )
    }

    /// Whether asking the same question again cannot help (a listing then falls back to one-by-one lookups).
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            FetchError::Refused { .. } | FetchError::Unusable { .. }
        )
    }
}

/// What a listing said about the messages it was asked about.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Listing {
    /// Reports about the messages asked about, keyed by their tracking ids. Entries about messages the poller did
    /// not ask about (other traffic on the account) are left out by the profile.
    pub reports: Vec<Report>,
    /// Messages the carrier says it does not know (Vonage's `ids_not_found`) or has no report for yet (a
    /// recipient missing from a Sinch batch report): PENDING without a status, not asked again this cycle.
    pub not_found: Vec<String>,
    /// Entries that could not be read, described (their messages are asked for one by one).
    pub malformed: Vec<String>,
}

/// How a profile answered a bulk question.
#[derive(Debug, PartialEq, Eq)]
pub enum Bulk {
    /// The profile has no bulk question for these messages: ask one by one.
    NotOffered,
    /// The carrier does not know the batch: ask one by one.
    UnknownBatch,
    Listed(Listing),
}

/// One provider's way of asking. `messages` are due messages of one job: one batch (`batch_id`), or a run of
/// messages without one.
pub trait Profile: Send + Sync {
    /// The `--carrier` name.
    fn name(&self) -> &'static str;

    /// How requests authenticate (the secret is the carrier token).
    fn auth(&self) -> Auth;

    /// Why this message cannot be asked about at all (a tracking id that is not the provider's message id, a
    /// missing batch id or number): it is closed without a request. `None`: it can be asked about.
    fn unaskable(&self, _message: &DueMessage) -> Option<String> {
        None
    }

    /// Asks about many of `messages` at once, where the provider offers a way.
    fn bulk(
        &self,
        http: &Http,
        batch_id: Option<&str>,
        messages: &[&DueMessage],
    ) -> Result<Bulk, FetchError>;

    /// Asks about one message; `None` when the carrier does not know it.
    fn one(&self, http: &Http, message: &DueMessage) -> Result<Option<Report>, FetchError>;

    /// One cheap authenticated request, for `doctor`: any answer but 401/403 shows the credentials work.
    fn probe(&self, http: &Http) -> Result<(), FetchError>;

    /// How far back the carrier keeps statuses: a message due later than this after its submission is closed
    /// UNCONFIRMED without a request.
    fn retention(&self) -> Option<TimeDelta> {
        None
    }

    /// Messages without a batch id per job: as many as one bulk question covers well.
    fn lone_chunk(&self) -> usize {
        10
    }
}

/// Builds the profile for `--carrier NAME`, checking `--carrier-account` against what the provider needs.
pub fn profile(name: &str, account: Option<&str>) -> Result<Box<dyn Profile>> {
    let account = account.map(str::trim).filter(|a| !a.is_empty());
    let need = |what: &str, valid: fn(&str) -> bool, shape: &str| -> Result<String> {
        match account {
            None => bail!(
                "--carrier {name} needs its {what}: set --carrier-account or env DLR_CARRIER_ACCOUNT"
            ),
            Some(id) if !valid(id) => bail!(
                "invalid --carrier-account (env DLR_CARRIER_ACCOUNT) {id:?}: a {name} {what} is {shape}"
            ),
            Some(id) => Ok(id.to_string()),
        }
    };
    let none = || -> Result<()> {
        match account {
            Some(_) => bail!(
                "--carrier-account (env DLR_CARRIER_ACCOUNT) is given, but --carrier {name} takes none"
            ),
            None => Ok(()),
        }
    };
    Ok(match name {
        "generic" => {
            none()?;
            Box::new(generic::Generic)
        }
        "twilio" => Box::new(twilio::Twilio::new(need(
            "Account SID",
            twilio::valid_account,
            "AC followed by 32 hex digits",
        )?)),
        "vonage" => Box::new(vonage::Vonage::new(need(
            "API key",
            vonage::valid_account,
            "8 letters or digits",
        )?)),
        "sinch" => Box::new(sinch::Sinch::new(need(
            "service plan id",
            sinch::valid_account,
            "letters and digits (32 hex digits, usually)",
        )?)),
        "infobip" => {
            none()?;
            Box::new(infobip::Infobip)
        }
        "telnyx" => {
            none()?;
            Box::new(telnyx::Telnyx)
        }
        other => bail!(
            "invalid --carrier (env DLR_CARRIER) {other:?}: expected one of {}",
            PROVIDERS.join(", ")
        ),
    })
}

/// The server URL of a provider with one public host, used when `--carrier-url` is not given.
pub fn default_url(name: &str) -> Option<&'static str> {
    match name {
        "twilio" => Some("https://api.twilio.com"),
        "vonage" => Some("https://api.nexmo.com"),
        "sinch" => Some("https://us.sms.api.sinch.com"),
        "telnyx" => Some("https://api.telnyx.com/v2"),
        _ => None,
    }
}

/// The request rate a provider allows by default, when `--max-rps` is not given: Infobip's logs allow 120
/// requests a minute, Vonage's Reports API about 10 a second.
pub fn default_interval(name: &str) -> Option<Duration> {
    match name {
        "infobip" => Some(Duration::from_millis(520)),
        "vonage" => Some(Duration::from_millis(110)),
        _ => None,
    }
}

/// Asks a profile about one job's messages through the shared transport.
///
/// This is the seam between the carrier's words and the rest of the poller: what a profile returns through it
/// (reports, unreadable entries, error reasons) has every phone number masked, whatever the carrier put where,
/// so that nothing the cycle logs or stores can hold one.
pub struct Carrier {
    pub http: Http,
    pub profile: Box<dyn Profile>,
}

impl Carrier {
    /// [`Profile::bulk`], its answer made safe to log and store.
    pub fn bulk(
        &self,
        batch_id: Option<&str>,
        messages: &[&DueMessage],
    ) -> Result<Bulk, FetchError> {
        let clean = |text: String| self.http.scrub(text);
        match self.profile.bulk(&self.http, batch_id, messages) {
            Ok(Bulk::Listed(listing)) => Ok(Bulk::Listed(listing.map_text(&clean))),
            Ok(other) => Ok(other),
            Err(e) => Err(e.map_text(&clean)),
        }
    }

    /// [`Profile::one`], its answer made safe to log and store.
    pub fn one(&self, message: &DueMessage) -> Result<Option<Report>, FetchError> {
        let clean = |text: String| self.http.scrub(text);
        self.profile
            .one(&self.http, message)
            .map(|report| report.map(|r| r.map_text(&clean)))
            .map_err(|e| e.map_text(&clean))
    }

    /// [`Profile::unaskable`], its reason made safe to log and store (it may quote a tracking id that holds a
    /// number).
    pub fn unaskable(&self, message: &DueMessage) -> Option<String> {
        self.profile.unaskable(message).map(mask_owned)
    }

    /// [`Profile::probe`], its error made safe to print.
    pub fn probe(&self) -> Result<(), FetchError> {
        self.profile
            .probe(&self.http)
            .map_err(|e| e.map_text(&|text: String| self.http.scrub(text)))
    }
}

impl Report {
    /// The carrier's words with every phone number masked (the tracking id is the poller's own).
    pub fn redacted(self) -> Report {
        self.map_text(&mask_owned)
    }

    /// The report with `clean` applied to the carrier's words: not to the tracking id (the poller's own), nor to
    /// the time, which is only ever stored read into the schema's form, never as the carrier wrote it (and every
    /// report has one: cleaning it would cost the cycle its time for nothing).
    fn map_text(self, clean: &impl Fn(String) -> String) -> Report {
        let opt = |text: Option<String>| text.map(clean);
        Report {
            tracking_id: self.tracking_id,
            status: clean(self.status),
            status_group: opt(self.status_group),
            error_code: opt(self.error_code),
            error_message: opt(self.error_message),
            error_group: opt(self.error_group),
            permanent: self.permanent,
            status_updated_at: self.status_updated_at,
        }
    }
}

impl Listing {
    fn map_text(self, clean: &impl Fn(String) -> String) -> Listing {
        Listing {
            reports: self
                .reports
                .into_iter()
                .map(|r| r.map_text(clean))
                .collect(),
            not_found: self.not_found,
            malformed: self.malformed.into_iter().map(clean).collect(),
        }
    }
}
