//! Talking to the carrier. The cycle sees only [`Carrier`]: "what does the carrier say about these due
//! messages", answered with reports keyed by the poller's own tracking ids.
//!
//! Each provider is a file here: its [`Provider`] entry (name, account rule, default URL, pace, table) and its
//! [`Profile`] (authentication, requests, paging, response parsing, matching of answers to tracking ids,
//! retention). Its status words and failure codes are data, in `tables/NAME.map`, read by [`table`]. The HTTP
//! transport with its timeouts and retries is [`http`]. Adding a provider is one file here (listed in
//! [`PROVIDERS`]), one table in `tables/`, one sandbox dialect and its tests.

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
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Result, bail};
use chrono::TimeDelta;

use self::http::{Auth, Http, Settings, Stats};
use self::table::Table;
use crate::control::Control;
use crate::domain::{DueMessage, LoneJobs};
use crate::redact::mask_owned;

/// The providers `--carrier` accepts: one file of this folder each.
pub const PROVIDERS: [&Provider; 6] = [
    &generic::PROVIDER,
    &twilio::PROVIDER,
    &vonage::PROVIDER,
    &sinch::PROVIDER,
    &infobip::PROVIDER,
    &telnyx::PROVIDER,
];

/// What the poller knows of a provider: its name, what it needs, where and how fast to ask it, its table and
/// its profile. Each provider's file holds its entry (`PROVIDER`).
#[derive(Debug)]
pub struct Provider {
    /// The `--carrier` name.
    pub name: &'static str,
    /// What `--carrier-account` holds, when the provider needs an account identity.
    pub account: Option<AccountRule>,
    /// The API's server, when it has one public host (`--carrier-url` overrides it).
    pub default_url: Option<&'static str>,
    /// Said when `--carrier-url` is missing and there is no default: where the URL is found.
    pub url_hint: &'static str,
    /// The spacing of requests when `--max-rps` is not given: the provider's own limit.
    pub pace: Option<Duration>,
    /// The status and failure table (`tables/NAME.map`).
    pub table: &'static str,
    /// The profile, for an account that passed [`Provider::account`] (`None` when it takes none).
    pub profile: fn(Option<String>) -> Box<dyn Profile>,
}

/// What a provider's `--carrier-account` must be.
#[derive(Debug)]
pub struct AccountRule {
    /// What the account is called ("Account SID").
    pub what: &'static str,
    /// What it looks like, for the error.
    pub shape: &'static str,
    pub valid: fn(&str) -> bool,
}

impl Provider {
    /// The provider `--carrier NAME` names.
    pub fn named(name: &str) -> Result<&'static Provider> {
        match PROVIDERS.into_iter().find(|p| p.name == name) {
            Some(p) => Ok(p),
            None => bail!(
                "invalid --carrier (env DLR_CARRIER) {name:?}: expected one of {}",
                names().join(", ")
            ),
        }
    }

    /// `--carrier-account` checked against what the provider needs: trimmed, `None` when it takes none.
    pub fn account(&self, account: Option<&str>) -> Result<Option<String>> {
        let name = self.name;
        let account = account.map(str::trim).filter(|a| !a.is_empty());
        Ok(match (&self.account, account) {
            (None, None) => None,
            (None, Some(_)) => bail!(
                "--carrier-account (env DLR_CARRIER_ACCOUNT) is given, but --carrier {name} takes none"
            ),
            (Some(rule), None) => bail!(
                "--carrier {name} needs its {}: set --carrier-account or env DLR_CARRIER_ACCOUNT",
                rule.what
            ),
            (Some(rule), Some(id)) if !(rule.valid)(id) => bail!(
                "invalid --carrier-account (env DLR_CARRIER_ACCOUNT) {id:?}: a {name} {} is {}",
                rule.what,
                rule.shape
            ),
            (Some(_), Some(id)) => Some(id.to_string()),
        })
    }
}

/// A provider ready to be asked: its entry, its profile (account checked) and its table (`--status-map`
/// applied). Built once, when the configuration is resolved.
#[derive(Clone)]
pub struct Setup {
    pub provider: &'static Provider,
    /// `--carrier-account`, as checked (for the configuration's log line).
    pub account: Option<String>,
    /// `--status-map` (for the configuration's log line).
    pub status_map: Option<PathBuf>,
    pub profile: Arc<dyn Profile>,
    pub table: Arc<Table>,
}

impl Setup {
    /// `--carrier`, `--carrier-account` and `--status-map`, checked.
    pub fn new(name: &str, account: Option<&str>, status_map: Option<&Path>) -> Result<Setup> {
        let provider = Provider::named(name)?;
        let account = provider.account(account)?;
        Ok(Setup {
            provider,
            profile: (provider.profile)(account.clone()).into(),
            table: Arc::new(Table::load(provider.name, status_map)?),
            account,
            status_map: status_map.map(Path::to_path_buf),
        })
    }

    /// The carrier on a transport of its own, with `settings`.
    pub fn connect(
        &self,
        settings: &Settings,
        control: Arc<Control>,
        stats: Arc<Stats>,
    ) -> Carrier {
        let http = Http::new(
            settings,
            self.profile.auth(),
            self.provider.pace,
            control,
            stats,
        );
        Carrier {
            http,
            profile: self.profile.clone(),
        }
    }
}

/// The provider, account and table file: what the configuration's log line shows (not the table's contents).
impl fmt::Debug for Setup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Setup")
            .field("provider", &self.provider.name)
            .field("account", &self.account)
            .field("status_map", &self.status_map)
            .finish_non_exhaustive()
    }
}

/// The names `--carrier` accepts.
pub fn names() -> Vec<&'static str> {
    PROVIDERS.iter().map(|p| p.name).collect()
}

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
    /// Messages the carrier says it does not know, in an answer about them one by one (Vonage's
    /// `ids_not_found`): PENDING without a status, not asked again this cycle. A message a bulk answer merely
    /// lacks is not here: it is asked the per-message way.
    pub not_found: Vec<String>,
    /// Entries that could not be read, described (their messages are asked for one by one).
    pub malformed: Vec<String>,
    /// The bulk question failed after it had answered part of the job (a later id list, page or minute failed):
    /// what it answered stands, paid for; the messages it did not reach are handled as a failed bulk question's.
    pub unfinished: Option<FetchError>,
}

impl Listing {
    /// The answer to a bulk question that failed with `error` after listing what `self` holds: that part stands
    /// when there is any and the failure is one of asking (the carrier unwell, the deadline, a stop), else the
    /// question failed as a whole. An answer that cannot be used (a listing that loops or pages past the cap, a
    /// redirect, a refusal) is not trusted for any of its parts.
    pub fn cut_short(mut self, error: FetchError) -> Result<Bulk, FetchError> {
        if error.is_permanent() || (self.reports.is_empty() && self.not_found.is_empty()) {
            return Err(error);
        }
        self.unfinished = Some(error);
        Ok(Bulk::Listed(self))
    }
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

    /// Whether its question about messages without a batch (a list of ids) differs from its question about a
    /// batch: a batch whose question failed is then asked by lists of ids first, and one by one only for what
    /// they lack (Infobip: `messageId=a,b,c` instead of a request per message, at 120 requests a minute).
    fn asks_by_ids(&self) -> bool {
        false
    }

    /// How messages without a batch id are cut into jobs: as many as one bulk question covers well.
    fn lone_jobs(&self) -> LoneJobs {
        LoneJobs::of(10)
    }
}

/// Asks a profile about one job's messages through the shared transport.
///
/// This is the seam between the carrier's words and the rest of the poller: what a profile returns through it
/// (reports, unreadable entries, error reasons) has every phone number masked, whatever the carrier put where,
/// so that nothing the cycle logs or stores can hold one.
pub struct Carrier {
    pub http: Http,
    pub profile: Arc<dyn Profile>,
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
            unfinished: self.unfinished.map(|e| e.map_text(clean)),
        }
    }
}
