//! Turns the raw command line and environment into a validated [`PollConfig`] before anything is opened, so that
//! every bad value is reported up front, naming its flag and env var.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use chrono::{DateTime, TimeDelta, Utc};

use crate::carrier::Setup;
use crate::carrier::http::Settings;
use crate::cli::PollArgs;
use crate::redact::CarrierToken;
use crate::timefmt;

/// Env var holding the carrier token (the alternative to `--carrier-token-file`).
pub const TOKEN_ENV: &str = "DLR_CARRIER_TOKEN";

/// Everything a poll cycle needs, validated.
#[derive(Debug, Clone)]
pub struct PollConfig {
    /// `--carrier`, `--carrier-account` and `--status-map`: the provider, its profile and its table.
    pub carrier: Setup,
    /// Without a trailing slash.
    pub carrier_url: String,
    pub token: CarrierToken,
    pub concurrency: usize,
    pub deadline: Duration,
    pub request_timeout: Duration,
    pub max_attempts: u32,
    /// Requests per second across all workers; `None`: the provider's pace, or no cap where it has none.
    pub max_rps: Option<u32>,
    /// `None`: the system clock.
    pub now: Option<DateTime<Utc>>,
    /// How long past its 72-hour window a submission first seen is still polled (once).
    pub catch_up: TimeDelta,
    pub json: bool,
}

impl PollConfig {
    /// How the transport talks to the carrier.
    pub fn http(&self) -> Settings {
        Settings {
            base: self.carrier_url.clone(),
            token: self.token.clone(),
            request_timeout: self.request_timeout,
            max_attempts: self.max_attempts,
            concurrency: self.concurrency,
            max_rps: self.max_rps,
        }
    }

    /// Validates the flags; `env_token` is the value of [`TOKEN_ENV`], passed in so tests need not touch the
    /// process environment.
    pub fn resolve(args: &PollArgs, env_token: Option<String>) -> Result<PollConfig> {
        // Checked here, so that a bad account or table is a configuration error before anything is opened.
        let carrier = Setup::new(
            &args.carrier.trim().to_ascii_lowercase(),
            args.carrier_account.as_deref(),
            args.status_map.as_deref(),
        )?;
        let provider = carrier.provider;
        let carrier_url = carrier_url(
            args.carrier_url.as_deref().or(provider.default_url),
            provider.url_hint,
            args.allow_insecure_http,
        )?;
        let token = token(args.carrier_token_file.as_deref(), env_token)?;
        let concurrency = bounded_int(
            &args.concurrency,
            "--concurrency (env DLR_POLLER_CONCURRENCY)",
            1,
            256,
        )?;
        let max_attempts = bounded_int(
            &args.max_attempts,
            "--max-attempts (env DLR_POLLER_MAX_ATTEMPTS)",
            1,
            20,
        )?;
        let deadline = bounded_duration(
            &args.deadline,
            "--deadline (env DLR_POLLER_DEADLINE)",
            Duration::from_secs(1),
            Duration::from_secs(24 * 3600),
        )?;
        let request_timeout = bounded_duration(
            &args.request_timeout,
            "--request-timeout (env DLR_POLLER_REQUEST_TIMEOUT)",
            Duration::from_millis(100),
            Duration::from_secs(600),
        )?;
        let max_rps = match &args.max_rps {
            Some(raw) => {
                Some(bounded_int(raw, "--max-rps (env DLR_POLLER_MAX_RPS)", 1, 100_000)? as u32)
            }
            None => None,
        };
        let now = match &args.now {
            Some(raw) => Some(clock(raw, args.allow_future_now, Utc::now())?),
            None => None,
        };
        let catch_up = bounded_duration(
            &args.catch_up,
            "--catch-up (env DLR_POLLER_CATCH_UP)",
            Duration::ZERO,
            Duration::from_secs(3650 * 86400),
        )?;
        Ok(PollConfig {
            carrier,
            carrier_url,
            token,
            concurrency: concurrency as usize,
            deadline,
            request_timeout,
            max_attempts: max_attempts as u32,
            max_rps,
            now,
            catch_up: TimeDelta::from_std(catch_up).context("--catch-up is too large")?,
            json: args.json,
        })
    }
}

/// How far `--now` may be ahead of the system clock without `--allow-future-now`: a scheduler firing a little
/// early, or two hosts' clocks a little apart.
pub const FUTURE_TOLERANCE: TimeDelta = TimeDelta::minutes(5);

/// Validates `--now` against the system clock `system`: a clock in the future would close every open message
/// for good today (their last slots would all be past), so it is refused unless `allow_future` says it is meant.
pub fn clock(raw: &str, allow_future: bool, system: DateTime<Utc>) -> Result<DateTime<Utc>> {
    let now = timefmt::parse(raw).context("invalid --now")?;
    if now > system + FUTURE_TOLERANCE && !allow_future {
        bail!(
            "--now {} is later than the system clock ({}); a cycle in the future would poll and close messages \
             ahead of their time. Pass --allow-future-now if that is meant (a test, a clock known to be behind)",
            timefmt::format(now),
            timefmt::format(system)
        );
    }
    Ok(now)
}

/// Validates `--busy-timeout`.
pub fn busy_timeout(raw: &str) -> Result<Duration> {
    bounded_duration(
        raw,
        "--busy-timeout (env DLR_POLLER_BUSY_TIMEOUT)",
        Duration::ZERO,
        Duration::from_secs(3600),
    )
}

/// Checks `--carrier-url` (or the provider's default); `hint` says where a provider without one keeps its URL.
fn carrier_url(raw: Option<&str>, hint: &str, allow_insecure_http: bool) -> Result<String> {
    let Some(raw) = raw.map(str::trim).filter(|s| !s.is_empty()) else {
        bail!("no carrier URL: set --carrier-url or env DLR_CARRIER_URL{hint}");
    };
    // Credentials in the URL would be printed wherever the URL is (`doctor`, errors): the token has its own file.
    // Any '@': a base URL needs none, and one after a '/' may end a password that holds a '/'.
    if raw.contains('@') {
        bail!(
            "invalid --carrier-url (env DLR_CARRIER_URL): it holds a user name or password (before '@'); give the \
             carrier token with --carrier-token-file or env DLR_CARRIER_TOKEN instead"
        );
    }
    // A query's secret (`?api_key=`) is not repeated in the errors either.
    let shown = crate::redact::mask_secrets(raw);
    let uri: ureq::http::Uri = raw
        .parse()
        .with_context(|| format!("invalid --carrier-url (env DLR_CARRIER_URL) {shown:?}"))?;
    let host = match (uri.scheme_str(), uri.host()) {
        (Some("http" | "https"), Some(host)) if !host.is_empty() => host,
        _ => bail!(
            "invalid --carrier-url (env DLR_CARRIER_URL) {shown:?}: expected an http:// or https:// URL with a host"
        ),
    };
    if uri.query().is_some() {
        bail!(
            "invalid --carrier-url (env DLR_CARRIER_URL) {shown:?}: a base URL cannot carry a query string"
        );
    }
    if uri.scheme_str() == Some("http") && !crate::host::is_loopback(host) && !allow_insecure_http {
        bail!(
            "refusing --carrier-url {shown:?}: plain http:// to a host other than loopback would send the carrier \
             token in clear; use https:// or pass --allow-insecure-http"
        );
    }
    Ok(raw.trim_end_matches('/').to_string())
}

/// Reads a secret from a file, trailing whitespace ignored; `name` names the flag and env var in errors (never
/// the content).
pub fn secret_file(path: &Path, name: &str) -> Result<String> {
    let raw = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read {name} {}", path.display()))?;
    let secret = raw.trim_end_matches(['\n', '\r']).to_string();
    if secret.is_empty() {
        bail!("{name} {} is empty", path.display());
    }
    Ok(secret)
}

fn token(file: Option<&Path>, env_token: Option<String>) -> Result<CarrierToken> {
    if let Some(path) = file {
        let raw = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read --carrier-token-file {}", path.display()))?;
        return CarrierToken::new(&raw)
            .with_context(|| format!("--carrier-token-file {} is empty", path.display()));
    }
    match env_token {
        Some(raw) => CarrierToken::new(&raw).with_context(|| format!("env {TOKEN_ENV} is empty")),
        None => bail!("no carrier token: set env {TOKEN_ENV} or pass --carrier-token-file PATH"),
    }
}

fn bounded_int(raw: &str, name: &str, min: u64, max: u64) -> Result<u64> {
    let n: u64 = raw.trim().parse().with_context(|| {
        format!("invalid {name} {raw:?}: expected a whole number from {min} to {max}")
    })?;
    if !(min..=max).contains(&n) {
        bail!("invalid {name} {raw:?}: expected a whole number from {min} to {max}");
    }
    Ok(n)
}

/// Parses a duration flag and checks it lies in `[min, max]`, naming `name` (the flag and its env var) in errors.
pub fn bounded_duration(raw: &str, name: &str, min: Duration, max: Duration) -> Result<Duration> {
    let d = parse_duration(raw).with_context(|| format!("invalid {name} {raw:?}"))?;
    if d < min || d > max {
        bail!(
            "invalid {name} {raw:?}: expected from {} to {}",
            timefmt::humanize(min),
            timefmt::humanize(max)
        );
    }
    Ok(d)
}

/// Parses durations such as `14m`, `90s`, `1h30m`, `500ms`.
pub fn parse_duration(raw: &str) -> Result<Duration> {
    let s = raw.trim();
    if s.is_empty() {
        bail!("expected a duration such as 14m, 90s or 1h30m");
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            bail!("expected a duration such as 14m, 90s or 1h30m");
        }
        let n: u64 = rest[..digits].parse().context("number too large")?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = match &rest[..unit_len] {
            "ms" => Duration::from_millis(1),
            "s" => Duration::from_secs(1),
            "m" => Duration::from_secs(60),
            "h" => Duration::from_secs(3600),
            "d" => Duration::from_secs(86400),
            "" => bail!("missing unit after {n}: use ms, s, m, h or d"),
            other => bail!("unknown unit {other:?}: use ms, s, m, h or d"),
        };
        rest = &rest[unit_len..];
        let part = unit
            .checked_mul(u32::try_from(n).context("number too large")?)
            .context("duration too large")?;
        total = total.checked_add(part).context("duration too large")?;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn args() -> PollArgs {
        PollArgs {
            carrier: "generic".into(),
            carrier_url: Some("http://127.0.0.1:8080/".into()),
            carrier_account: None,
            status_map: None,
            carrier_token_file: None,
            concurrency: "8".into(),
            deadline: "14m".into(),
            request_timeout: "30s".into(),
            max_attempts: "4".into(),
            max_rps: None,
            now: None,
            allow_future_now: false,
            catch_up: "24h".into(),
            allow_insecure_http: false,
            json: false,
            metrics_file: None,
            pushgateway: None,
            replica: None,
        }
    }

    fn err(args: &PollArgs, token: Option<&str>) -> String {
        format!(
            "{:#}",
            PollConfig::resolve(args, token.map(String::from)).unwrap_err()
        )
    }

    #[test]
    fn defaults_resolve() {
        let config = PollConfig::resolve(&args(), Some("tok".into())).unwrap();
        assert_eq!(config.carrier_url, "http://127.0.0.1:8080");
        assert_eq!(config.concurrency, 8);
        assert_eq!(config.deadline, Duration::from_secs(14 * 60));
        assert_eq!(config.token.expose(), "tok");
        assert!(!format!("{config:?}").contains("tok\""));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("14m").unwrap(), Duration::from_secs(840));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(
            parse_duration("730d").unwrap(),
            Duration::from_secs(730 * 86400)
        );
        for bad in ["", "14", "m", "-5m", "5 m", "3w", "99999999999999999999s"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn missing_url_and_token_are_named() {
        let mut a = args();
        a.carrier_url = None;
        assert!(err(&a, Some("t")).contains("--carrier-url or env DLR_CARRIER_URL"));
        assert!(err(&args(), None).contains("DLR_CARRIER_TOKEN"));
        assert!(err(&args(), Some("  \n")).contains("env DLR_CARRIER_TOKEN is empty"));
    }

    #[test]
    fn token_file_wins_and_is_trimmed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "from-file\n").unwrap();
        let mut a = args();
        a.carrier_token_file = Some(path.clone());
        let config = PollConfig::resolve(&a, Some("from-env".into())).unwrap();
        assert_eq!(config.token.expose(), "from-file");
        std::fs::write(&path, "").unwrap();
        assert!(err(&a, None).contains("is empty"));
        a.carrier_token_file = Some(PathBuf::from("/nonexistent/token"));
        assert!(err(&a, None).contains("cannot read --carrier-token-file /nonexistent/token"));
    }

    #[test]
    fn bad_urls() {
        for (url, expect) in [
            ("ftp://x", "expected an http:// or https:// URL"),
            ("not a url", "invalid --carrier-url"),
            ("http://carrier.example", "--allow-insecure-http"),
            ("https://carrier.example/v1?x=1", "query string"),
            (
                "https://u:pw@carrier.example",
                "holds a user name or password",
            ),
            ("https://carrier.example/v1?api_key=k3y", "?api_key=***"),
        ] {
            let mut a = args();
            a.carrier_url = Some(url.into());
            assert!(
                err(&a, Some("t")).contains(expect),
                "{url}: {}",
                err(&a, Some("t"))
            );
            assert!(!err(&a, Some("t")).contains("pw@") && !err(&a, Some("t")).contains("k3y"));
        }
        let mut a = args();
        a.carrier_url = Some("http://carrier.example".into());
        a.allow_insecure_http = true;
        assert!(PollConfig::resolve(&a, Some("t".into())).is_ok());
        a.carrier_url = Some("http://[::1]:9/".into());
        a.allow_insecure_http = false;
        assert!(PollConfig::resolve(&a, Some("t".into())).is_ok());
    }

    #[test]
    fn bad_numbers_and_durations_name_their_flag() {
        let mut a = args();
        a.concurrency = "0".into();
        assert!(
            err(&a, Some("t")).contains("invalid --concurrency (env DLR_POLLER_CONCURRENCY) \"0\"")
        );
        a.concurrency = "lots".into();
        assert!(err(&a, Some("t")).contains("--concurrency"));
        let mut a = args();
        a.deadline = "48h".into();
        assert!(err(&a, Some("t")).contains(
            "invalid --deadline (env DLR_POLLER_DEADLINE) \"48h\": expected from 1s to 24h"
        ));
        a.deadline = "-1m".into();
        assert!(err(&a, Some("t")).contains("--deadline"));
        let mut a = args();
        a.max_rps = Some("0".into());
        assert!(err(&a, Some("t")).contains("invalid --max-rps (env DLR_POLLER_MAX_RPS) \"0\""));
        a.max_rps = Some("25".into());
        assert_eq!(
            PollConfig::resolve(&a, Some("t".into())).unwrap().max_rps,
            Some(25)
        );
        let mut a = args();
        a.now = Some("tomorrow".into());
        assert!(err(&a, Some("t")).contains("invalid --now"));
    }
}
