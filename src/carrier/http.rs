//! The HTTP transport: one shared `ureq` agent (connection reuse across workers), explicit timeouts (ureq has none
//! by default), a cap on the body size, the profile's authentication, and bounded retries with backoff for
//! transient failures (a 429's `Retry-After` or `x-ratelimit-reset` is honoured).

use std::io::Read;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use super::FetchError;
use crate::control::{Control, Stop};
use crate::rate::{Pace, Turn};
use crate::redact::{CarrierToken, mask_owned, request_label};
use crate::retry::{Backoff, Rng, parse_retry_after};

/// Bodies above this size are refused: a status page is a few hundred kilobytes at most.
const MAX_BODY: u64 = 16 * 1024 * 1024;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Request and retry counts of a cycle, shared by the workers.
#[derive(Debug, Default)]
pub struct Stats {
    pub requests: AtomicU64,
    pub retries: AtomicU64,
}

/// How a profile authenticates; the secret is the carrier token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Auth {
    /// `Authorization: Bearer {token}` (generic, Sinch, Telnyx).
    Bearer,
    /// `Authorization: Basic base64({user}:{token})` (Twilio, Vonage). A token of the form `user:secret` names
    /// its own user (a Twilio API key: `SK...:secret`).
    Basic { user: String },
    /// `Authorization: App {token}` (Infobip).
    App,
}

/// How the transport talks to the carrier: `--carrier-url`, the token and the request flags.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Without a trailing slash.
    pub base: String,
    pub token: CarrierToken,
    pub request_timeout: Duration,
    pub max_attempts: u32,
    /// Worker threads sharing the transport.
    pub concurrency: usize,
    /// Requests per second across all workers; `None`: the provider's pace.
    pub max_rps: Option<u32>,
}

/// The requests a transport may have in flight at once (`--concurrency`), whichever thread asks: a worker, or
/// a part of a listing it fans out.
struct Slots {
    free: Mutex<usize>,
    freed: Condvar,
}

/// A request's place among [`Slots`], given back when it is dropped.
struct Slot<'a>(&'a Slots);

impl Slots {
    fn new(n: usize) -> Slots {
        Slots {
            free: Mutex::new(n.max(1)),
            freed: Condvar::new(),
        }
    }

    /// Waits for a free slot, or until the cycle must stop.
    fn take(&self, control: &Control) -> Result<Slot<'_>, Stop> {
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(stop) = control.stopped() {
                return Err(stop);
            }
            if *free > 0 {
                *free -= 1;
                return Ok(Slot(self));
            }
            free = self
                .freed
                .wait_timeout(free, Duration::from_millis(50))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        *self.0.free.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        self.0.freed.notify_one();
    }
}

pub struct Http {
    agent: ureq::Agent,
    base: String,
    token: CarrierToken,
    auth: Auth,
    request_timeout: Duration,
    max_attempts: u32,
    concurrency: usize,
    /// At most `concurrency` requests in flight.
    slots: Slots,
    backoff: Backoff,
    /// The pace of requests across all workers.
    pace: Pace,
    control: Arc<Control>,
    stats: Arc<Stats>,
    /// The token in the forms a carrier could echo it (as is, percent-encoded, the Basic credentials), for
    /// [`Http::scrub`].
    secrets: Vec<String>,
}

/// What one attempt came to.
enum Attempt<T> {
    Done(Result<Option<T>, FetchError>),
    Retry {
        reason: String,
        retry_after: Option<Duration>,
        /// The carrier answered 429: it wants fewer requests.
        throttled: bool,
    },
}

impl Http {
    /// `default_interval`: the spacing of requests when `--max-rps` is not given (the provider's own limit).
    pub fn new(
        settings: &Settings,
        auth: Auth,
        default_interval: Option<Duration>,
        control: Arc<Control>,
        stats: Arc<Stats>,
    ) -> Http {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .timeout_connect(Some(CONNECT_TIMEOUT.min(settings.request_timeout)))
            .max_idle_connections_per_host(settings.concurrency.max(3))
            .max_idle_connections(settings.concurrency.max(10))
            .user_agent(concat!("dlr-poller/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        let pace = match settings.max_rps {
            Some(rps) => Pace::per_second(rps),
            None => default_interval.map_or_else(Pace::unlimited, Pace::every),
        };
        let token = settings.token.expose();
        let mut secrets = vec![token.to_string(), crate::percent::encode(token)];
        if let Auth::Basic { user } = &auth {
            secrets.push(base64(basic_pair(user, token).as_bytes()));
        }
        // A secret of a few characters would be found in ordinary words.
        secrets.retain(|s| s.len() >= 6);
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        secrets.dedup();
        Http {
            secrets,
            agent,
            base: settings.base.clone(),
            token: settings.token.clone(),
            auth,
            request_timeout: settings.request_timeout,
            max_attempts: settings.max_attempts,
            concurrency: settings.concurrency.max(1),
            slots: Slots::new(settings.concurrency),
            backoff: Backoff::default(),
            pace,
            control,
            stats,
        }
    }

    /// The carrier throttled a request: every worker waits out the pause it asked for, when that fits before the
    /// deadline (a longer one fails only the request that got it); without a word of when to come back, every
    /// worker slows down.
    fn slow_down(&self, turn: Turn, retry_after: Option<Duration>) {
        match retry_after {
            Some(wait) if wait < self.control.remaining() => self.pace.pause(wait),
            Some(_) => {}
            None => {
                if let Some(interval) = self.pace.slow_down(turn) {
                    log::info!(
                        "the carrier is throttling requests (HTTP 429): pacing at one request per {} ms",
                        interval.as_millis()
                    );
                }
            }
        }
    }

    /// How the requests are paced, for the log: the base pace and, after throttling, the pace reached.
    pub fn pace(&self) -> String {
        let per = |d: Duration| {
            let rps = 1.0 / d.as_secs_f64();
            match rps {
                _ if d.is_zero() => "no limit".to_string(),
                rps if rps < 10.0 => format!("at most {rps:.1} requests a second"),
                rps => format!("at most {rps:.0} requests a second"),
            }
        };
        let (base, now) = (self.pace.base(), self.pace.interval());
        if now == base {
            per(base)
        } else {
            format!(
                "{} (slowed down from {} by throttling)",
                per(now),
                per(base)
            )
        }
    }

    /// Whether throttling has slowed the pace below its base.
    pub fn slowed(&self) -> bool {
        self.pace.interval() > self.pace.base()
    }

    /// `--concurrency`: how many requests the cycle may have in flight.
    pub fn concurrency(&self) -> usize {
        self.concurrency
    }

    /// Carrier text made safe to log and store: the token in any form the carrier could echo it (a body quoting
    /// the request's `Authorization` header) replaced by `(redacted)`, and every phone number masked.
    pub fn scrub(&self, mut text: String) -> String {
        for secret in &self.secrets {
            if text.contains(secret.as_str()) {
                text = text.replace(secret.as_str(), "(redacted)");
            }
        }
        mask_owned(text)
    }

    /// For `doctor`: GETs a listing that every account has (`path`). Any answer but 401/403 shows that the
    /// credentials work; a 404 says that the URL or the account is wrong, which polling would take for "no such
    /// message" about every message.
    pub fn probe_listing(&self, path: &str) -> Result<(), FetchError> {
        match self.get(path, |_| Ok(()))? {
            Some(()) => Ok(()),
            None => Err(FetchError::Unusable {
                reason: format!(
                    "GET {}: the carrier answered 404 for a listing every account has: check --carrier-url and \
                     --carrier-account",
                    request_label(path)
                ),
            }),
        }
    }

    /// The cycle's control: whether it must stop.
    pub fn control(&self) -> &Control {
        &self.control
    }

    /// GETs `path` (with its query; appended to the base URL) and parses a 200 body; `Ok(None)` on 404.
    /// Transient failures are retried; a body `parse` rejects is retried too (a proxy's error page), then
    /// fails.
    pub fn get<T>(
        &self,
        path: &str,
        parse: impl Fn(&[u8]) -> Result<T, String>,
    ) -> Result<Option<T>, FetchError> {
        let url = format!("{}{}", self.base, path);
        // Errors and logs name the request by this label only, never by its path: a path may hold a number.
        let request = format!("GET {}", request_label(path));
        let mut rng = Rng::from_entropy();
        let mut attempt = 0;
        loop {
            attempt += 1;
            if let Some(stop) = self.control.stopped() {
                return Err(stopped(stop));
            }
            // The slot is held for the attempt only, never through a backoff.
            let slot = self.slots.take(&self.control).map_err(stopped)?;
            let turn = self.pace.acquire(&self.control).map_err(stopped)?;
            let timeout = self.request_timeout.min(self.control.remaining());
            if timeout.is_zero() {
                return Err(FetchError::Deadline);
            }
            let attempted = self.attempt(&url, &request, timeout, &parse);
            drop(slot);
            let (reason, retry_after) = match attempted {
                Attempt::Done(result) => {
                    self.pace.recover();
                    return result;
                }
                Attempt::Retry {
                    reason,
                    retry_after,
                    throttled,
                } => {
                    if throttled {
                        self.slow_down(turn, retry_after);
                    }
                    (reason, retry_after)
                }
            };
            if self.control.remaining().is_zero() {
                // The deadline came during the attempt (its timeout is cut to the time left): the poller's side.
                log::debug!("{reason}; the cycle's deadline has come");
                return Err(FetchError::Deadline);
            }
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
                return Err(FetchError::Postponed { reason });
            }
            log::debug!("{reason}; retrying in {} ms", wait.as_millis());
            self.stats.retries.fetch_add(1, Ordering::Relaxed);
            self.control.sleep(wait).map_err(stopped)?;
        }
    }

    fn attempt<T>(
        &self,
        url: &str,
        request: &str,
        timeout: Duration,
        parse: &impl Fn(&[u8]) -> Result<T, String>,
    ) -> Attempt<T> {
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
        let response = self
            .agent
            .get(url)
            .header("Authorization", self.authorization())
            .header("Accept", "application/json")
            .config()
            .timeout_global(Some(timeout))
            .build()
            .call();
        let mut response = match response {
            Ok(r) => r,
            Err(e) => {
                return retry(format!("{request}: {}", self.scrub(describe(&e))), None);
            }
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
                let retry_after = header("retry-after")
                    .as_deref()
                    .and_then(parse_retry_after)
                    .or_else(|| {
                        header("x-ratelimit-reset")
                            .as_deref()
                            .and_then(|v| parse_rate_limit_reset(v, std::time::SystemTime::now()))
                    });
                return Attempt::Retry {
                    reason: format!("{request}: HTTP 429 Too Many Requests"),
                    retry_after,
                    throttled: true,
                };
            }
            408 | 500..=599 => return retry(format!("{request}: HTTP {status}"), None),
            300..=399 => {
                let location = self.scrub(request_label(&header("location").unwrap_or_default()));
                return unusable(format!(
                    "{request}: carrier answered HTTP {status} redirecting to {location:?}; redirects are not \
                     followed (check --carrier-url)"
                ));
            }
            _ => {
                let snippet = self.scrub(snippet(response.body_mut().as_reader()));
                return refused(
                    status,
                    format!("{request}: carrier answered HTTP {status}: {snippet}"),
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
                    "{request}: response body larger than {} MiB",
                    MAX_BODY / (1024 * 1024)
                ));
            }
            Err(e) => {
                return retry(
                    format!("{request}: reading body: {}", self.scrub(describe(&e))),
                    None,
                );
            }
        };
        match parse(&body) {
            Ok(value) => Attempt::Done(Ok(Some(value))),
            Err(e) => retry(
                format!(
                    "{request}: malformed response ({}; content type {}): {}",
                    self.scrub(e),
                    self.scrub(content_type),
                    self.scrub(snippet(&body[..]))
                ),
                None,
            ),
        }
    }
}

impl Http {
    /// The `Authorization` header value. Built per request, never stored or logged.
    fn authorization(&self) -> String {
        let secret = self.token.expose();
        match &self.auth {
            Auth::Bearer => format!("Bearer {secret}"),
            Auth::App => format!("App {secret}"),
            Auth::Basic { user } => {
                format!("Basic {}", base64(basic_pair(user, secret).as_bytes()))
            }
        }
    }
}

/// The `user:secret` pair of Basic authentication. A token of the form `user:secret` names its own user.
fn basic_pair(user: &str, token: &str) -> String {
    if token.contains(':') {
        token.to_string()
    } else {
        format!("{user}:{token}")
    }
}

/// Reads `x-ratelimit-reset`: seconds until the limit resets, or (a value past the year 2001) the Unix time it
/// resets at.
fn parse_rate_limit_reset(value: &str, now: std::time::SystemTime) -> Option<Duration> {
    let n: u64 = value.trim().parse().ok()?;
    if n < 1_000_000_000 {
        return Some(Duration::from_secs(n));
    }
    let at = std::time::UNIX_EPOCH.checked_add(Duration::from_secs(n))?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// Standard base64 with padding (RFC 4648), for Basic authentication.
pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn retry<T>(reason: String, retry_after: Option<Duration>) -> Attempt<T> {
    Attempt::Retry {
        reason,
        retry_after,
        throttled: false,
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

/// A transport error in words (to be scrubbed: an error may quote the URL).
fn describe(e: &ureq::Error) -> String {
    match e {
        ureq::Error::Timeout(_) => "timed out".to_string(),
        ureq::Error::Io(io) => format!("connection error: {io}"),
        ureq::Error::ConnectionFailed => "connection failed".to_string(),
        ureq::Error::HostNotFound => "host not found".to_string(),
        other => other.to_string(),
    }
}

/// The first 200 bytes of a body, for error messages (to be scrubbed).
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_as_rfc_4648() {
        for (input, expected) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foobar", "Zm9vYmFy"),
            ("ACabc:tok\u{e9}n", "QUNhYmM6dG9rw6lu"),
        ] {
            assert_eq!(base64(input.as_bytes()), expected, "{input:?}");
        }
    }

    #[test]
    fn rate_limit_reset_in_seconds_or_as_a_time() {
        let now = std::time::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        assert_eq!(
            parse_rate_limit_reset("7", now),
            Some(Duration::from_secs(7))
        );
        assert_eq!(
            parse_rate_limit_reset("1800000012", now),
            Some(Duration::from_secs(12))
        );
        assert_eq!(
            parse_rate_limit_reset("1700000000", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_rate_limit_reset("soon", now), None);
        assert_eq!(parse_rate_limit_reset(&u64::MAX.to_string(), now), None);
    }
}
