//! The HTTP transport: one shared `ureq` agent (connection reuse across workers), explicit timeouts (ureq has none
//! by default), a cap on the body size, and bounded retries with backoff for transient failures.

use std::collections::HashSet;
use std::io::Read;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::generic::{self, BatchPage};
use super::{FetchError, Listing, Report, StatusSource};
use crate::config::PollConfig;
use crate::control::{Control, Stop};
use crate::rate::RateLimit;
use crate::redact::CarrierToken;
use crate::retry::{Backoff, Rng, parse_retry_after};

/// Bodies above this size are refused: a status page is a few hundred kilobytes at most.
const MAX_BODY: u64 = 16 * 1024 * 1024;
/// A batch listing longer than this is treated as an endless paging chain.
pub const MAX_PAGES: usize = 1_000;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Request and retry counts of a cycle, shared by the workers.
#[derive(Debug, Default)]
pub struct Stats {
    pub requests: AtomicU64,
    pub retries: AtomicU64,
}

pub struct HttpCarrier {
    agent: ureq::Agent,
    base: String,
    token: CarrierToken,
    request_timeout: Duration,
    max_attempts: u32,
    backoff: Backoff,
    rate: Option<RateLimit>,
    control: Arc<Control>,
    stats: Arc<Stats>,
}

/// What one attempt came to.
enum Attempt<T> {
    Done(Result<Option<T>, FetchError>),
    Retry {
        reason: String,
        retry_after: Option<Duration>,
    },
}

impl HttpCarrier {
    pub fn new(config: &PollConfig, control: Arc<Control>, stats: Arc<Stats>) -> HttpCarrier {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .timeout_connect(Some(CONNECT_TIMEOUT.min(config.request_timeout)))
            .max_idle_connections_per_host(config.concurrency.max(3))
            .max_idle_connections(config.concurrency.max(10))
            .user_agent(concat!("dlr-poller/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        HttpCarrier {
            agent,
            base: config.carrier_url.clone(),
            token: config.token.clone(),
            request_timeout: config.request_timeout,
            max_attempts: config.max_attempts,
            backoff: Backoff::default(),
            rate: config.max_rps.map(RateLimit::per_second),
            control,
            stats,
        }
    }

    /// GETs `path` and parses a 200 body; `Ok(None)` on 404. Transient failures are retried.
    fn fetch<T>(
        &self,
        path: &str,
        parse: impl Fn(&[u8]) -> Result<T, serde_json::Error>,
    ) -> Result<Option<T>, FetchError> {
        let url = format!("{}{}", self.base, path);
        let mut rng = Rng::from_entropy();
        let mut attempt = 0;
        loop {
            attempt += 1;
            if let Some(stop) = self.control.stopped() {
                return Err(stopped(stop));
            }
            if let Some(rate) = &self.rate {
                rate.acquire(&self.control).map_err(stopped)?;
            }
            let timeout = self.request_timeout.min(self.control.remaining());
            if timeout.is_zero() {
                return Err(FetchError::Deadline);
            }
            let (reason, retry_after) = match self.attempt(&url, path, timeout, &parse) {
                Attempt::Done(result) => return result,
                Attempt::Retry {
                    reason,
                    retry_after,
                } => (reason, retry_after),
            };
            if attempt >= self.max_attempts {
                return Err(FetchError::Failed {
                    attempts: attempt,
                    reason,
                });
            }
            let wait = retry_after.unwrap_or_else(|| self.backoff.wait(attempt, &mut rng));
            let left = self.control.remaining();
            if retry_after.is_some() && wait >= left && self.control.stopped().is_none() {
                // Not a silent "deadline": the carrier asked for a pause the cycle cannot make.
                let reason = format!(
                    "{reason} with Retry-After {} s, longer than the {} ms left before the deadline",
                    wait.as_secs(),
                    left.as_millis()
                );
                log::warn!("{reason}; giving up on this request");
                return Err(FetchError::Failed {
                    attempts: attempt,
                    reason,
                });
            }
            log::debug!("{reason}; retrying in {} ms", wait.as_millis());
            self.stats.retries.fetch_add(1, Ordering::Relaxed);
            self.control.sleep(wait).map_err(stopped)?;
        }
    }

    fn attempt<T>(
        &self,
        url: &str,
        path: &str,
        timeout: Duration,
        parse: &impl Fn(&[u8]) -> Result<T, serde_json::Error>,
    ) -> Attempt<T> {
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
        let response = self
            .agent
            .get(url)
            .header("Authorization", format!("Bearer {}", self.token.expose()))
            .header("Accept", "application/json")
            .config()
            .timeout_global(Some(timeout))
            .build()
            .call();
        let mut response = match response {
            Ok(r) => r,
            Err(e) => return retry(format!("GET {path}: {}", describe(&e)), None),
        };
        let status = response.status().as_u16();
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let content_type = header("content-type").unwrap_or_else(|| "none".into());
        match status {
            200 => {}
            404 => return Attempt::Done(Ok(None)),
            401 | 403 => {
                self.control.abort_credentials_rejected();
                return Attempt::Done(Err(FetchError::CredentialsRejected { status }));
            }
            429 => {
                let retry_after = header("retry-after").as_deref().and_then(parse_retry_after);
                return retry(
                    format!("GET {path}: HTTP 429 Too Many Requests"),
                    retry_after,
                );
            }
            408 | 500..=599 => return retry(format!("GET {path}: HTTP {status}"), None),
            300..=399 => {
                let location = header("location").unwrap_or_default();
                return unusable(format!(
                    "GET {path}: carrier answered HTTP {status} redirecting to {location:?}; redirects are not \
                     followed (check --carrier-url)"
                ));
            }
            _ => {
                let snippet = snippet(response.body_mut().as_reader());
                return refused(
                    status,
                    format!("GET {path}: carrier answered HTTP {status}: {snippet}"),
                );
            }
        }
        let body = match response
            .body_mut()
            .with_config()
            .limit(MAX_BODY)
            .read_to_vec()
        {
            Ok(body) => body,
            Err(ureq::Error::BodyExceedsLimit(_)) => {
                return unusable(format!(
                    "GET {path}: response body larger than {MAX_BODY} bytes"
                ));
            }
            Err(e) => return retry(format!("GET {path}: reading body: {}", describe(&e)), None),
        };
        match parse(&body) {
            Ok(value) => Attempt::Done(Ok(Some(value))),
            Err(e) => retry(
                format!(
                    "GET {path}: malformed response ({e}; content type {content_type}): {}",
                    snippet(&body[..])
                ),
                None,
            ),
        }
    }
}

impl StatusSource for HttpCarrier {
    fn batch(&self, batch_id: &str) -> Result<Option<Listing>, FetchError> {
        let mut listing = Listing::default();
        let mut page_token: Option<String> = None;
        let mut seen_tokens = HashSet::new();
        for page_number in 1..=MAX_PAGES {
            let path = generic::batch_path(batch_id, page_token.as_deref());
            let page: BatchPage = match self.fetch(&path, generic::parse_batch_page)? {
                Some(page) => page,
                None if page_number == 1 => return Ok(None),
                None => {
                    return Err(FetchError::Unusable {
                        reason: format!(
                            "GET {path}: page {page_number} of batch {batch_id:?} answered 404"
                        ),
                    });
                }
            };
            listing.reports.extend(page.messages);
            listing.malformed.extend(page.malformed);
            match page.next_page_token {
                None => return Ok(Some(listing)),
                Some(token) if !seen_tokens.insert(token.clone()) => {
                    return Err(FetchError::Unusable {
                        reason: format!(
                            "batch {batch_id:?}: paging loops (page token {token:?} came back)"
                        ),
                    });
                }
                Some(token) => page_token = Some(token),
            }
        }
        Err(FetchError::Unusable {
            reason: format!(
                "batch {batch_id:?}: more than {MAX_PAGES} pages; giving up on the listing"
            ),
        })
    }

    fn message(&self, tracking_id: &str) -> Result<Option<Report>, FetchError> {
        let path = generic::message_path(tracking_id);
        let report = self.fetch(&path, generic::parse_message)?;
        match report {
            Some(r) if r.tracking_id != tracking_id => Err(FetchError::Refused {
                code: None,
                reason: format!(
                    "GET {path}: carrier answered for tracking id {:?}",
                    r.tracking_id
                ),
            }),
            other => Ok(other),
        }
    }
}

fn retry<T>(reason: String, retry_after: Option<Duration>) -> Attempt<T> {
    Attempt::Retry {
        reason,
        retry_after,
    }
}

fn refused<T>(status: u16, reason: String) -> Attempt<T> {
    Attempt::Done(Err(FetchError::Refused {
        code: Some(format!("HTTP {status}")),
        reason,
    }))
}

fn unusable<T>(reason: String) -> Attempt<T> {
    Attempt::Done(Err(FetchError::Unusable { reason }))
}

fn stopped(stop: Stop) -> FetchError {
    match stop {
        Stop::Deadline => FetchError::Deadline,
        Stop::CredentialsRejected | Stop::StoreFailed | Stop::Signal(_) => FetchError::Stopped,
    }
}

fn describe(e: &ureq::Error) -> String {
    match e {
        ureq::Error::Timeout(_) => "timed out".to_string(),
        ureq::Error::Io(io) => format!("connection error: {io}"),
        ureq::Error::ConnectionFailed => "connection failed".to_string(),
        ureq::Error::HostNotFound => "host not found".to_string(),
        other => other.to_string(),
    }
}

/// The first 200 bytes of a body, for error messages.
fn snippet(reader: impl Read) -> String {
    let mut buf = Vec::new();
    let _ = reader.take(200).read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    let text = text.trim();
    if text.is_empty() {
        "(empty body)".to_string()
    } else {
        text.to_string()
    }
}
