//! The PostgreSQL backend: the production store, beside the dispatcher's own database. This file holds SQL and
//! transaction shape; the store's rules are in `store/mod.rs`, and every error is tagged as a database error by
//! `store::open`.
//!
//! Connections are plain blocking ones (one per thread, no pool). TLS is rustls (no system OpenSSL); a URL that
//! asks for TLS never falls back to plaintext. Every connection sets server-side timeouts, so that a stuck server
//! or a forgotten lock cannot hang a run. Writes go in bulk: arrays through `unnest` and the audit rows by binary
//! COPY, never a statement per message.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use chrono::{DateTime, SecondsFormat, Utc};
use postgres::binary_copy::BinaryCopyInWriter;
use postgres::types::{ToSql, Type};
use postgres::{Client, Config, GenericClient, NoTls, Row, SimpleQueryMessage, Statement};

use super::{
    Addressee, AuditRow, Backend, CloseSteps, Closed, Cursor, DueAfter, DueGroup, FAILING_BULK,
    HORIZON_KEY, History, Join, Key, LAST_SUCCESS_KEY, MetricsData, Phase, Rounds, Sharing, Span,
    TABLES, Unit, VERSION, Written, check_version, close_by_hand, counter_columns, failing_of,
    missing_table, refuse_newer, starting_row, taken_in, totals_of, warn_abandoned, warn_moved_on,
};
use crate::domain::{DueMessage, Intake, LoneJobs, PollRecord, Submission};
use crate::phases;
use crate::redact;
use crate::schedule;
use crate::summary::{COUNTERS, Summary};
use crate::timefmt;

/// The current schema, applied as a whole to a new database.
const SCHEMA: &str = include_str!("../../schema.postgres.sql");
/// The upgrades from each older version (PostgreSQL support began at version 2): `UPGRADES[0]` takes 2 to 3.
const UPGRADES: &[&str] = &[
    include_str!("../migrations/postgres/v3.sql"),
    include_str!("../migrations/postgres/v4.sql"),
];
/// How long one statement may run before the server cancels it. The largest are a chunk of results written in
/// bulk and a chunk of submissions read: seconds.
const STATEMENT_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a connection may sit idle inside a transaction before the server ends it (and its locks).
const IDLE_IN_TRANSACTION_TIMEOUT: Duration = Duration::from_secs(60);
/// The same for the read of sms_submissions, which waits for the writer between its chunks (it holds no lock
/// but the table's share): the cycle's budget.
const STREAM_IDLE: Duration = Duration::from_secs(15 * 60);
/// Connect timeout, unless the URL gives one.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Unacknowledged data may wait this long before the kernel drops the connection, unless the URL says.
const TCP_USER_TIMEOUT: Duration = Duration::from_secs(30);
/// Keepalive probes start after this much idle time, unless the URL says.
const KEEPALIVES_IDLE: Duration = Duration::from_secs(30);
/// The advisory lock key `migrate` holds while it changes the schema ("dlrmigr").
const MIGRATE_LOCK: i64 = 0x0064_6c72_6d69_6772;
/// Rows reserved up front for one read of the submissions.
const READ_RESERVE: usize = 10_000;
/// The advisory lock key that makes joining or starting a round one run at a time ("dlrrnd").
const ROUND_LOCK: i64 = 0x0000_646c_7272_6e64;
/// Runs whose clocks are this close share a round: replicas started together for one cycle.
const ROUND_SPAN: chrono::TimeDelta = chrono::TimeDelta::minutes(5);
/// A run's sessions are named `dlr-poller:{token}`: a claim whose holder has no session left is taken over at
/// once, without waiting for its lease to run out.
const SESSION_PREFIX: &str = "dlr-poller:";
/// Whether the run holding a claim (`claimed_by` of alias `c`) still has a session.
const HOLDER_ALIVE: &str = "EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.application_name = 'dlr-poller:' || c.claimed_by)";

/// How the connection is secured (libpq's `sslmode`, less the modes that may silently fall back to plaintext).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    /// Encrypted; the server's certificate is not checked.
    Require,
    /// Encrypted; the certificate must chain to a trusted root.
    VerifyCa,
    /// Encrypted; the certificate must chain to a trusted root and name the host.
    VerifyFull,
}

impl SslMode {
    fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }
}

/// A PostgreSQL server and database, from `--db`.
#[derive(Clone)]
pub struct PgTarget {
    config: Config,
    ssl: SslMode,
    root_cert: Option<PathBuf>,
    /// The dispatcher's table, quoted for SQL, and as given (for messages).
    submissions: String,
    submissions_name: String,
    /// The URL without its password, for logs and errors.
    shown: String,
}

impl fmt::Debug for PgTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PgTarget({})", self.shown)
    }
}

impl fmt::Display for PgTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.shown)
    }
}

impl PgTarget {
    pub fn is_url(db: &str) -> bool {
        db.starts_with("postgres://") || db.starts_with("postgresql://")
    }

    /// Reads a `postgres://` URL. `password` (from `--db-password-file`) wins over one in the URL. `sslmode`
    /// and `sslrootcert` are read here; the rest is libpq's URL syntax.
    pub fn parse(url: &str, password: Option<String>, submissions: &str) -> Result<PgTarget> {
        check_url(url)?;
        let (base, query) = url.split_once('?').unwrap_or((url, ""));
        let (ssl, root_cert, rest) = tls_parameters(query)?;
        let plain = if rest.is_empty() {
            base.to_string()
        } else {
            format!("{base}?{}", rest.join("&"))
        };
        let mut config: Config = plain.parse().map_err(|e: postgres::Error| {
            // The driver's own words ("invalid connection string") name the part only in their source.
            let detail = std::error::Error::source(&e)
                .map(|s| format!(": {s}"))
                .unwrap_or_default();
            anyhow::anyhow!(
                "invalid PostgreSQL URL in --db ({}): {e}{detail}",
                redact::url(url)
            )
        })?;
        if config.get_hosts().is_empty() {
            bail!("--db {} names no host", redact::url(url));
        }
        if let Some(password) = password {
            config.password(password);
        }
        if config.get_user().is_none() {
            bail!(
                "--db {} names no user: postgres://USER@HOST/DBNAME",
                redact::url(url)
            );
        }
        set_defaults(&mut config, query);
        let local = config.get_hosts().iter().all(|h| match h {
            postgres::config::Host::Unix(_) => true,
            postgres::config::Host::Tcp(name) => crate::host::is_loopback(name),
        });
        let ssl = match ssl {
            Some(mode) => mode,
            None if local => SslMode::Disable,
            None => SslMode::VerifyFull,
        };
        if root_cert.is_some() && ssl == SslMode::Disable {
            bail!("--db gives sslrootcert but sslmode=disable");
        }
        if ssl == SslMode::Disable && !local {
            log::warn!(
                "--db asks for sslmode=disable to a host that is not this machine: the password and data cross the \
                 network in plaintext"
            );
        }
        // The crate's own TLS negotiation is told only whether to use TLS: which certificates count is the rustls
        // configuration's business.
        config.ssl_mode(match ssl {
            SslMode::Disable => postgres::config::SslMode::Disable,
            _ => postgres::config::SslMode::Require,
        });
        let (submissions, submissions_name) = quote_table(submissions)?;
        let shown = format!(
            "{}?sslmode={}{}",
            redact::url(base),
            ssl.as_str(),
            if rest.is_empty() { "" } else { "&..." }
        );
        Ok(PgTarget {
            config,
            ssl,
            root_cert,
            submissions,
            submissions_name,
            shown,
        })
    }

    /// A new connection with the session set up: UTC, and the timeouts. `lock_timeout` bounds every wait for a
    /// lock.
    fn connect(&self, lock_timeout: Duration) -> Result<Client> {
        let mut client = match self.ssl {
            SslMode::Disable => self.config.connect(NoTls),
            mode => self
                .config
                .connect(tokio_postgres_rustls::MakeRustlsConnect::new(tls_config(
                    mode,
                    self.root_cert.as_deref(),
                )?)),
        }
        .with_context(|| format!("connecting to {}", self.shown))?;
        // Plans are made for each execution's values: a generic plan of the chunked read, made without them,
        // hashes the whole tracking table for every chunk. JIT compilation costs more than the poller's short
        // statements ever take.
        client
            .batch_execute(&format!(
                "SET TIME ZONE 'UTC'; SET DateStyle = 'ISO'; SET statement_timeout = {}; SET lock_timeout = {}; \
                 SET idle_in_transaction_session_timeout = {}; SET plan_cache_mode = force_custom_plan; \
                 SET jit = off",
                STATEMENT_TIMEOUT.as_millis(),
                lock_timeout.as_millis().max(1),
                IDLE_IN_TRANSACTION_TIMEOUT.as_millis()
            ))
            .with_context(|| format!("setting up the session on {}", self.shown))?;
        Ok(client)
    }
}

/// The rustls configuration for a mode that uses TLS.
/// The TLS parameters of a `--db` URL's query (`sslmode`, `sslrootcert`), which rustls handles, and the other
/// parameters, which the driver reads.
fn tls_parameters(query: &str) -> Result<(Option<SslMode>, Option<PathBuf>, Vec<&str>)> {
    let mut ssl = None;
    let mut root_cert = None;
    let mut rest = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "sslmode" => {
                ssl = Some(match value {
                    "disable" => SslMode::Disable,
                    "require" => SslMode::Require,
                    "verify-ca" => SslMode::VerifyCa,
                    "verify-full" => SslMode::VerifyFull,
                    "allow" | "prefer" => bail!(
                        "sslmode={value} in --db may connect without TLS; use sslmode=require or verify-full \
                         (or disable, to say so)"
                    ),
                    other => bail!(
                        "invalid sslmode={other:?} in --db: expected disable, require, verify-ca or verify-full"
                    ),
                })
            }
            "sslrootcert" => root_cert = Some(PathBuf::from(decoded(value, "sslrootcert")?)),
            _ => rest.push(pair),
        }
    }
    Ok((ssl, root_cert, rest))
}

/// The timeouts, keepalives and session name the URL (whose query is `query`) does not set.
fn set_defaults(config: &mut Config, query: &str) {
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECT_TIMEOUT);
    }
    if config.get_tcp_user_timeout().is_none() {
        config.tcp_user_timeout(TCP_USER_TIMEOUT);
    }
    if !query.contains("keepalives_idle") {
        config.keepalives_idle(KEEPALIVES_IDLE);
    }
    config.keepalives(true);
    if config.get_application_name().is_none() {
        config.application_name("dlr-poller");
    }
}

fn tls_config(mode: SslMode, root_cert: Option<&Path>) -> Result<rustls::ClientConfig> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    match root_cert {
        Some(path) => {
            let certs = CertificateDer::pem_file_iter(path)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .map_err(|e| anyhow::anyhow!("{e}"))
                .with_context(|| format!("reading sslrootcert {}", path.display()))?;
            if certs.is_empty() {
                bail!("sslrootcert {} holds no certificate", path.display());
            }
            for cert in certs {
                roots
                    .add(cert)
                    .with_context(|| format!("sslrootcert {}", path.display()))?;
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("setting up TLS")?;
    let config = match mode {
        SslMode::VerifyFull => builder.with_root_certificates(roots).with_no_client_auth(),
        SslMode::Require | SslMode::VerifyCa => {
            let webpki = rustls::client::WebPkiServerVerifier::builder_with_provider(
                Arc::new(roots),
                provider.clone(),
            )
            .build()
            .context("setting up TLS certificate checks")?;
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(Lenient {
                    webpki,
                    check_chain: mode == SslMode::VerifyCa,
                }))
                .with_no_client_auth()
        }
        SslMode::Disable => bail!("TLS asked for with sslmode=disable"),
    };
    Ok(config)
}

/// Certificate checks for `require` (none: encryption only, as libpq) and `verify-ca` (the chain, not the
/// name). Handshake signatures are always checked.
#[derive(Debug)]
struct Lenient {
    webpki: Arc<rustls::client::WebPkiServerVerifier>,
    check_chain: bool,
}

impl rustls::client::danger::ServerCertVerifier for Lenient {
    fn verify_server_cert(
        &self,
        end_entity: &rustls::pki_types::CertificateDer<'_>,
        intermediates: &[rustls::pki_types::CertificateDer<'_>],
        server_name: &rustls::pki_types::ServerName<'_>,
        ocsp_response: &[u8],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        use rustls::CertificateError::{NotValidForName, NotValidForNameContext};
        if !self.check_chain {
            return Ok(rustls::client::danger::ServerCertVerified::assertion());
        }
        match self.webpki.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Err(rustls::Error::InvalidCertificate(
                NotValidForName | NotValidForNameContext { .. },
            )) => Ok(rustls::client::danger::ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

/// One part of `--db` percent-decoded; a malformed escape is an error naming the part (never its value: it may
/// be a password).
fn decoded(value: &str, part: &str) -> Result<String> {
    crate::percent::decode(value).map_err(|e| anyhow::anyhow!("invalid {part} in --db: {e}"))
}

/// Checks the parts of a `postgres://` URL that the driver reads leniently or with a bare "invalid connection
/// string", so that a malformed one is an error naming the part: the user name, the password, each host and
/// port, the database name, and each query parameter's name and value.
/// `postgres://[user[:password]@][host[:port][,host[:port]...]][/dbname][?name=value&...]`
fn check_url(url: &str) -> Result<()> {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
    let (authority, dbname) = rest.split_once('/').unwrap_or((rest, ""));
    if dbname.contains('@') || query.contains('@') {
        // Most likely a password holding '/' or '?': its first part would otherwise be read, and shown, as a host
        // or port.
        bail!(
            "invalid --db: an '@' after the host; a user name or password holding '/', '?', '#' or '@' must \
             percent-encode it (%2F, %3F, %23, %40)"
        );
    }
    let hosts = match authority.rsplit_once('@') {
        Some((userinfo, hosts)) => {
            let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
            decoded(user, "user name")?;
            decoded(password, "password")?;
            hosts
        }
        None => authority,
    };
    if !hosts.is_empty() {
        for host in hosts.split(',') {
            check_host(host)?;
        }
    }
    decoded(dbname, "database name")?;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let Some((name, value)) = pair.split_once('=') else {
            bail!(
                "invalid query parameter {:?} in --db: expected name=value",
                redact::url(pair)
            );
        };
        let name = decoded(name, "query parameter name")?;
        decoded(value, &format!("value of {name}"))?;
    }
    Ok(())
}

/// One `host[:port]` or `[v6 address][:port]` of `--db`.
fn check_host(host: &str) -> Result<()> {
    let (name, port) = if let Some(bracketed) = host.strip_prefix('[') {
        let Some((address, after)) = bracketed.split_once(']') else {
            bail!("invalid host {host:?} in --db: a '[' without its ']'");
        };
        if address.parse::<std::net::Ipv6Addr>().is_err() {
            bail!("invalid host {host:?} in --db: {address:?} in brackets is not an IPv6 address");
        }
        match after.strip_prefix(':') {
            Some(port) => (address, Some(port)),
            None if after.is_empty() => (address, None),
            None => bail!("invalid host {host:?} in --db: expected ':PORT' after ']'"),
        }
    } else {
        match host.split_once(':') {
            Some((name, port)) => (name, Some(port)),
            None => (host, None),
        }
    };
    decoded(name, "host")?;
    if let Some(port) = port
        && !port.parse::<u16>().is_ok_and(|p| p > 0)
    {
        if port.len() <= 5 && port.bytes().all(|b| b.is_ascii_digit()) {
            bail!("invalid port {port:?} in --db: expected a number from 1 to 65535");
        }
        // Not repeated: text where a port should be may be part of a mistyped password.
        bail!(
            "invalid port in --db: the text after the host's ':' is not a number from 1 to 65535"
        );
    }
    Ok(())
}

/// The dispatcher's table name, checked and quoted: `name` or `schema.name`, each part an SQL identifier.
fn quote_table(name: &str) -> Result<(String, String)> {
    let parts: Vec<&str> = name.split('.').collect();
    let valid = |p: &str| {
        let mut chars = p.chars();
        chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$')
    };
    if parts.len() > 2 || !parts.iter().all(|p| valid(p)) {
        bail!(
            "invalid --submissions-table {name:?}: expected a table name or schema.table, letters, digits and _"
        );
    }
    let quoted = parts
        .iter()
        .map(|p| format!("\"{p}\""))
        .collect::<Vec<_>>()
        .join(".");
    Ok((quoted, name.to_string()))
}

/// A time column as the stored text form (`2025-12-01T09:00:00Z`).
fn secs(column: &str) -> String {
    format!("to_char({column} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')")
}

/// A time column with milliseconds (`2025-12-01T09:00:00.123Z`).
fn millis(column: &str) -> String {
    format!("to_char({column} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')")
}

/// Text for a `text` column: PostgreSQL refuses NUL characters, so they are dropped (only they).
fn clean(s: Option<&str>) -> Option<String> {
    s.map(|s| s.replace('\0', ""))
}

/// The types of the dispatcher's key columns, as SQL type names, read once per connection.
#[derive(Clone, Debug)]
struct Columns {
    submitted_at: String,
    tracking_id: String,
}

/// A PostgreSQL database, by one connection.
pub struct Postgres {
    client: Client,
    target: PgTarget,
    columns: Option<Columns>,
    /// Prepared statements of the reads a cycle repeats, by SQL text.
    statements: std::collections::HashMap<String, Statement>,
    /// The round this run joined, and its token (its sessions' name).
    round: Option<i64>,
    token: Option<String>,
    /// How long a statement waits for a lock (`--busy-timeout`), for connections opened later.
    lock_timeout: Duration,
    /// The read of sms_submissions under way.
    stream: Option<Stream>,
}

/// `value` as an SQL escape string literal, which reads the same whatever the server's
/// standard_conforming_strings.
fn text_literal(value: &str) -> String {
    format!("E'{}'", value.replace('\\', "\\\\").replace('\'', "''"))
}

/// A read of sms_submissions under way: one query in (submitted_at, tracking_id) order, on a connection of its
/// own, fetched a chunk at a time. One pass over the table whether or not it has the index the poller asks for:
/// a chunk read after the last row of the one before would be, without the index, a scan and a sort of the
/// whole table each.
struct Stream {
    client: Client,
    span: Span,
    /// Where the read goes on: after the last row fetched.
    next: Cursor,
}

impl Postgres {
    /// Opens the read of the rows of `span` after `cursor` (its start: the whole span), in submission order, on a
    /// connection of its own: a read-only transaction holding one cursor, `intake`, planned for all its rows.
    fn open_stream(&mut self, span: &Span, cursor: &Cursor) -> Result<Stream> {
        let columns = self.columns()?;
        // Values are written into the query as text literals cast to the column's own type, whatever it is
        // (timestamptz, text, bigint, uuid...): a cursor's query takes no parameters. An escape string literal
        // reads the same whatever the server's standard_conforming_strings.
        let literal =
            |value: &str, ty: &str| format!("CAST({}::text AS {ty})", text_literal(value));
        let key = |k: &Key| -> Option<String> {
            match k {
                Key::Text(t) => Some(t.clone()),
                Key::Integer(n) => Some(n.to_string()),
                Key::Real(n) => Some(n.to_string()),
                Key::Blob(b) => Some(String::from_utf8_lossy(b).into_owned()),
                Key::Min | Key::Null => None,
            }
        };
        let start = *cursor == span.start();
        let at = match (span, start) {
            (Span::From(from) | Span::Between(from, _), true) => Some(from.clone()),
            _ => key(&cursor.submitted_at),
        }
        .map(|v| literal(&v, &columns.submitted_at));
        let id = key(&cursor.tracking_id).map(|v| literal(&v, &columns.tracking_id));
        let after = match (&at, &id) {
            (Some(at), Some(id)) => Some(format!("(s.submitted_at, s.tracking_id) > ({at}, {id})")),
            _ => None,
        };
        let to = |to: &str| literal(to, &columns.submitted_at);
        let filter = match (span, start, &at, after) {
            (Span::From(_), true, Some(at), _) => format!("s.submitted_at >= {at}"),
            (Span::Between(_, upper), true, Some(at), _) => {
                format!("s.submitted_at >= {at} AND s.submitted_at < {}", to(upper))
            }
            (Span::Below(upper), true, _, _) => format!("s.submitted_at < {}", to(upper)),
            (Span::Null, true, _, _) => "s.submitted_at IS NULL".to_string(),
            (Span::From(_), false, _, Some(after)) => after,
            (Span::Between(_, upper) | Span::Below(upper), false, _, Some(after)) => {
                format!("{after} AND s.submitted_at < {}", to(upper))
            }
            (Span::Null, false, _, _) => match &id {
                Some(id) => format!("s.submitted_at IS NULL AND s.tracking_id > {id}"),
                None => "s.submitted_at IS NULL".to_string(),
            },
            _ => bail!(
                "a read of {} cannot go on from {cursor:?}",
                self.target.submissions_name
            ),
        };
        let sql = format!(
            "SELECT s.tracking_id::text, s.customer_id::text, s.phone_number::text, \
             s.carrier_batch_id::text, s.submitted_at::text, (t.tracking_id IS NOT NULL)::text \
             FROM {} s LEFT JOIN message_tracking t ON t.tracking_id = s.tracking_id::text \
             WHERE s.tracking_id IS NOT NULL AND {filter} \
             ORDER BY s.submitted_at, s.tracking_id",
            self.target.submissions,
        );
        let mut client = self.target.connect(self.lock_timeout)?;
        // Planned for every row, not the first few; the gaps between fetches are the writer's, not idleness
        // to end (the cycle's own deadline bounds them).
        client.batch_execute(&format!(
            "BEGIN READ ONLY; SET LOCAL cursor_tuple_fraction = 1; \
             SET LOCAL idle_in_transaction_session_timeout = {}; DECLARE intake NO SCROLL CURSOR FOR {sql}",
            STREAM_IDLE.as_millis()
        ))?;
        Ok(Stream {
            client,
            span: span.clone(),
            next: cursor.clone(),
        })
    }

    pub fn open(target: &PgTarget, busy_timeout: Duration) -> Result<Postgres> {
        let client = target.connect(busy_timeout)?;
        Ok(Postgres {
            client,
            target: target.clone(),
            columns: None,
            statements: std::collections::HashMap::new(),
            round: None,
            token: None,
            lock_timeout: busy_timeout,
            stream: None,
        })
    }

    /// Names this session after the run, once: other runs see from it that the run lives.
    fn name_session(&mut self, me: &str) -> Result<()> {
        if self.token.as_deref() != Some(me) {
            self.client.batch_execute(&format!(
                "SET application_name = '{SESSION_PREFIX}{}'",
                me.replace('\'', "")
            ))?;
            self.token = Some(me.to_string());
        }
        Ok(())
    }

    /// A statement prepared once per connection, its parameters of the given types.
    fn prepared(&mut self, sql: &str, types: &[Type]) -> Result<Statement> {
        if let Some(s) = self.statements.get(sql) {
            return Ok(s.clone());
        }
        let statement = self.client.prepare_typed(sql, types)?;
        self.statements.insert(sql.to_string(), statement.clone());
        Ok(statement)
    }

    fn version(client: &mut impl GenericClient) -> Result<Option<usize>> {
        let present: bool = client
            .query_one("SELECT to_regclass('poller_schema') IS NOT NULL", &[])?
            .get(0);
        if !present {
            return Ok(None);
        }
        let version: Option<i32> = client
            .query_opt("SELECT max(version) FROM poller_schema", &[])?
            .and_then(|r| r.get(0));
        Ok(Some(version.unwrap_or(0) as usize))
    }

    /// The dispatcher's key column types (read once).
    fn columns(&mut self) -> Result<Columns> {
        if let Some(c) = &self.columns {
            return Ok(c.clone());
        }
        let rows = self
            .client
            .query(
                "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a \
                 WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped",
                &[&self.target.submissions],
            )
            .with_context(|| format!("reading the columns of {}", self.target.submissions_name))?;
        let find = |name: &str| -> Option<String> {
            rows.iter()
                .find(|r| r.get::<_, String>(0) == name)
                .map(|r| r.get(1))
        };
        let mut missing = Vec::new();
        for name in [
            "tracking_id",
            "customer_id",
            "phone_number",
            "carrier_batch_id",
            "submitted_at",
        ] {
            if find(name).is_none() {
                missing.push(name);
            }
        }
        if rows.is_empty() {
            bail!(
                "table {} does not exist or this user cannot see it: check --submissions-table, and GRANT SELECT \
                 on it to the poller's user",
                self.target.submissions_name
            );
        }
        if !missing.is_empty() {
            bail!(
                "table {} lacks the columns {}",
                self.target.submissions_name,
                missing.join(", ")
            );
        }
        let columns = Columns {
            submitted_at: find("submitted_at").unwrap_or_default(),
            tracking_id: find("tracking_id").unwrap_or_default(),
        };
        self.columns = Some(columns.clone());
        Ok(columns)
    }

    fn cycles_where(&mut self, filter: &str, value: i64, n: u64) -> Result<Vec<Summary>> {
        let sql = format!(
            "SELECT id, {}, {}, duration_seconds, {}, outcome, exit_code, error, {} \
             FROM poll_cycles WHERE {filter} ORDER BY id DESC LIMIT $2",
            millis("started_at"),
            millis("finished_at"),
            secs("cycle_now"),
            counter_columns()
        );
        let rows = self
            .client
            .query(&sql, &[&value, &(n as i64)])
            .context("reading poll_cycles")?;
        Ok(rows
            .iter()
            .map(|r| {
                let mut s = Summary {
                    cycle_id: r.get(0),
                    started_at: r.get(1),
                    finished_at: r.get(2),
                    duration_seconds: r.get::<_, Option<f64>>(3).unwrap_or(0.0),
                    cycle_now: r.get(4),
                    outcome: r.get(5),
                    exit_code: r.get::<_, Option<i16>>(6).map(|c| c as u8),
                    error: r.get(7),
                    // Kept per cycle in the audit rows, not in the cycle record.
                    failed_by_category: Default::default(),
                    ..Summary::default()
                };
                for (i, counter) in COUNTERS.iter().enumerate() {
                    (counter.set)(&mut s, r.get::<_, i64>(8 + i) as u64);
                }
                s
            })
            .collect())
    }
}

impl Backend for Postgres {
    fn migrate(&mut self) -> Result<(usize, usize)> {
        let run = |client: &mut Client| -> Result<(usize, usize)> {
            // No statement limit: a schema change waits for the locks it needs.
            client.batch_execute("SET statement_timeout = 0")?;
            let mut tx = client.transaction()?;
            // Several pods may migrate at once: one at a time, each reading the version under the lock.
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATE_LOCK])?;
            let from = Postgres::version(&mut tx)?.unwrap_or(0);
            refuse_newer(from)?;
            if from == 0 {
                tx.batch_execute(SCHEMA)
                    .with_context(|| format!("applying schema version {VERSION}"))?;
            } else {
                for (i, sql) in UPGRADES.iter().enumerate().skip(from - 2) {
                    tx.batch_execute(sql)
                        .with_context(|| format!("upgrading the schema to version {}", i + 3))?;
                }
            }
            if from < VERSION {
                tx.execute(
                    "INSERT INTO poller_schema (version) VALUES ($1)",
                    &[&(VERSION as i32)],
                )?;
            }
            tx.commit()?;
            Ok((from, VERSION))
        };
        let result = run(&mut self.client);
        let _ = self.client.batch_execute(&format!(
            "SET statement_timeout = {}",
            STATEMENT_TIMEOUT.as_millis()
        ));
        result.context("migrating the schema")
    }

    fn check_schema(&mut self) -> Result<()> {
        let run = |me: &mut Postgres| -> Result<()> {
            let version = Postgres::version(&mut me.client)
                .context("reading the schema version")?
                .unwrap_or(0);
            check_version(version)?;
            for table in TABLES {
                let present: bool = me
                    .client
                    .query_one("SELECT to_regclass($1) IS NOT NULL", &[&table])?
                    .get(0);
                if !present {
                    return Err(missing_table(table, version, "schema.postgres.sql"));
                }
            }
            me.columns()?;
            let sql = format!(
                "SELECT tracking_id, customer_id, phone_number, carrier_batch_id, submitted_at FROM {} LIMIT 0",
                me.target.submissions
            );
            me.client.query(&sql, &[]).with_context(|| {
                format!(
                    "reading {}: GRANT SELECT on it to the poller's user",
                    me.target.submissions_name
                )
            })?;
            // Each cycle reads the window by (submitted_at, tracking_id): without an index that starts so, every
            // chunk of the read scans the table.
            let indexed: bool = me
                .client
                .query_one(
                    "SELECT EXISTS (SELECT 1 FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid \
                     AND a.attnum = i.indkey[0] WHERE i.indrelid = to_regclass($1) AND a.attname = 'submitted_at')",
                    &[&me.target.submissions],
                )?
                .get(0);
            if !indexed {
                log::warn!(
                    "{} has no index on (submitted_at, tracking_id): each cycle's read of it scans the whole table; \
                     ask its owners for CREATE INDEX CONCURRENTLY ON {} (submitted_at, tracking_id)",
                    me.target.submissions_name,
                    me.target.submissions_name
                );
            }
            Ok(())
        };
        run(self)
    }

    fn sharing(&mut self) -> Sharing<'_> {
        Sharing::Rounds(self)
    }

    fn read_horizon(&mut self) -> Result<Option<String>> {
        self.client
            .query_opt(
                "SELECT value FROM poller_state WHERE key = $1",
                &[&HORIZON_KEY],
            )
            .map(|r| r.map(|r| r.get(0)))
            .context("reading the read horizon of the submissions")
    }

    fn save_horizon(&mut self, horizon: &str) -> Result<()> {
        self.client
            .execute(
                "INSERT INTO poller_state (key, value) VALUES ($1, $2) \
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                &[&HORIZON_KEY, &horizon],
            )
            .context("saving the read horizon of the submissions")?;
        Ok(())
    }

    /// The rows come from one query per span ([`Stream`]).
    fn submissions(
        &mut self,
        span: &Span,
        cursor: &Cursor,
        limit: usize,
    ) -> Result<Vec<(Submission, Cursor)>> {
        let name = self.target.submissions_name.clone();
        let run = |me: &mut Postgres| -> Result<Vec<(Submission, Cursor)>> {
            let going_on = me
                .stream
                .as_ref()
                .is_some_and(|s| s.span == *span && s.next == *cursor);
            if !going_on {
                // Another span, or a read that did not go on from where the last stopped: a query of its own.
                me.stream = None;
                me.stream = Some(me.open_stream(span, cursor)?);
            }
            let Some(stream) = me.stream.as_mut() else {
                unreachable!("a stream was just opened")
            };
            let rows = stream
                .client
                .simple_query(&format!("FETCH {limit} FROM intake"))?;
            let mut out = Vec::with_capacity(limit.min(READ_RESERVE));
            for message in rows {
                let SimpleQueryMessage::Row(r) = message else {
                    continue;
                };
                let text = |i: usize| r.get(i).map(str::to_string);
                let raw = text(4);
                let submitted_at = match &raw {
                    None => Err("submitted_at is NULL".to_string()),
                    Some(text) => timefmt::parse_submitted(text).map_err(|e| format!("{e:#}")),
                };
                let tracking_id = text(0);
                // The dispatcher's value is quoted: a number typed into the wrong column is masked.
                let place = (!Submission::trackable(tracking_id.as_deref())).then(|| match &raw {
                    Some(text) => {
                        redact::mask_text(&format!("the row submitted at {text:?}")).into_owned()
                    }
                    None => "a row whose submitted_at is NULL".to_string(),
                });
                out.push((
                    Submission {
                        tracking_id: tracking_id.clone(),
                        place,
                        customer_id: text(1),
                        phone_number: text(2),
                        batch_id: text(3),
                        submitted_at,
                        tracked: r.get(5) == Some("true"),
                    },
                    Cursor {
                        submitted_at: raw.map_or(Key::Null, Key::Text),
                        tracking_id: tracking_id.map_or(Key::Null, Key::Text),
                    },
                ));
            }
            if out.len() < limit {
                // The span is read: its connection closes, and its transaction with it.
                me.stream = None;
            } else if let Some((_, last)) = out.last() {
                stream.next = last.clone();
            }
            Ok(out)
        };
        run(self).with_context(|| format!("reading {name}"))
    }

    fn take_in(&mut self, intakes: &[Intake]) -> Result<(usize, usize)> {
        let run = |me: &mut Postgres| -> Result<(usize, usize)> {
            let n = intakes.len();
            let (mut ids, mut customers, mut phones, mut batches) = (
                Vec::with_capacity(n),
                Vec::with_capacity(n),
                Vec::with_capacity(n),
                Vec::with_capacity(n),
            );
            let (mut submitted, mut states, mut due, mut notes) = (
                Vec::with_capacity(n),
                Vec::with_capacity(n),
                Vec::with_capacity(n),
                Vec::with_capacity(n),
            );
            for i in intakes {
                let (state, next_due_at, note) = starting_row(i);
                ids.push(i.tracking_id.as_str());
                customers.push(i.customer_id.as_deref());
                phones.push(i.phone_number.as_deref());
                batches.push(i.batch_id.as_deref());
                submitted.push(i.submitted_at);
                states.push(state);
                due.push(next_due_at);
                notes.push(clean(note));
            }
            let mut tx = me.client.transaction()?;
            let rows = tx.query(
                "INSERT INTO message_tracking (tracking_id, customer_id, phone_number, carrier_batch_id, \
                 submitted_at, state, next_due_at, note) \
                 SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::timestamptz[], \
                 $6::text[], $7::timestamptz[], $8::text[]) \
                 ON CONFLICT (tracking_id) DO NOTHING RETURNING state",
                &[
                    &ids, &customers, &phones, &batches, &submitted, &states, &due, &notes,
                ],
            )?;
            tx.commit()?;
            Ok(taken_in(rows.iter().map(|r| r.get::<_, &str>(0))))
        };
        run(self).context("taking in new submissions")
    }

    fn due_groups(&mut self, cutoff: DateTime<Utc>) -> Result<Vec<DueGroup>> {
        self.client
            .query(
                "SELECT carrier_batch_id, count(*), min(next_due_at) FROM message_tracking \
                 WHERE state = 'OPEN' AND next_due_at <= $1 \
                 GROUP BY carrier_batch_id ORDER BY min(next_due_at), carrier_batch_id",
                &[&cutoff],
            )
            .map(|rows| {
                rows.iter()
                    .map(|r| DueGroup {
                        batch_id: r.get(0),
                        messages: r.get::<_, i64>(1) as u64,
                    })
                    .collect()
            })
            .context("finding due messages")
    }

    fn due_messages(
        &mut self,
        batch_id: Option<&str>,
        cutoff: DateTime<Utc>,
        after: Option<&DueAfter>,
        limit: usize,
    ) -> Result<(Vec<DueMessage>, Option<DueAfter>)> {
        // The first chunk starts after (-infinity, ''), before every value.
        let sql = format!(
            "SELECT tracking_id, customer_id, phone_number, carrier_batch_id, submitted_at, polls \
             FROM message_tracking WHERE state = 'OPEN' AND next_due_at <= $2 \
             AND (submitted_at, tracking_id) > ($3::timestamptz, $4) AND {} \
             ORDER BY submitted_at, tracking_id LIMIT $5",
            if batch_id.is_some() {
                "carrier_batch_id = $1"
            } else {
                "carrier_batch_id IS NULL"
            }
        );
        let (at, id) = after.map_or(("-infinity", ""), |a| (a.at.as_str(), a.id.as_str()));
        let run = |me: &mut Postgres| -> Result<(Vec<DueMessage>, Option<DueAfter>)> {
            let statement = me.prepared(
                &sql,
                &[
                    Type::TEXT,
                    Type::TIMESTAMPTZ,
                    Type::TEXT,
                    Type::TEXT,
                    Type::INT8,
                ],
            )?;
            let rows = me
                .client
                .query(&statement, &[&batch_id, &cutoff, &at, &id, &(limit as i64)])?;
            let messages = rows.iter().map(due_message).collect::<Result<Vec<_>>>()?;
            let last = messages.last().map(|m| DueAfter {
                at: m.submitted_at.to_rfc3339_opts(SecondsFormat::Micros, true),
                id: m.tracking_id.clone(),
            });
            Ok((messages, last))
        };
        run(self).context("finding due messages")
    }

    fn failing_bulks(&mut self, now: DateTime<Utc>) -> Result<Vec<(String, DateTime<Utc>)>> {
        let rows = self
            .client
            .query(
                "SELECT key, value FROM poller_state WHERE starts_with(key, $1)",
                &[&FAILING_BULK],
            )
            .context("reading the batches whose bulk question failed")?;
        Ok(failing_of(
            rows.iter().map(|r| (r.get(0), r.get(1))).collect(),
            now,
        ))
    }

    fn note_failing_bulks(
        &mut self,
        batches: &[String],
        until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let run = |client: &mut Client| -> Result<()> {
            let mut tx = client.transaction()?;
            tx.execute(
                "DELETE FROM poller_state WHERE starts_with(key, $1) AND value <= $2",
                &[&FAILING_BULK, &timefmt::format(now)],
            )?;
            let keys: Vec<String> = batches
                .iter()
                .map(|b| format!("{FAILING_BULK}{b}"))
                .collect();
            tx.execute(
                "INSERT INTO poller_state (key, value) SELECT k, $2 FROM unnest($1::text[]) AS u(k) \
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                &[&keys, &timefmt::format(until)],
            )?;
            tx.commit()?;
            Ok(())
        };
        run(&mut self.client).context("remembering the batches whose bulk question failed")
    }

    fn overdue(
        &mut self,
        cutoff: DateTime<Utc>,
        round: Option<i64>,
    ) -> Result<(u64, Option<DateTime<Utc>>)> {
        // A unit not done that a live run holds is being polled (its batch, or its run of messages without one).
        // They are few (as many as the runs' workers): read once, then each due row is checked against them.
        let row = self
            .client
            .query_one(
                &format!(
                    "WITH held AS MATERIALIZED ( \
                       SELECT c.batch_id, c.first_at, c.first_id, c.last_at, c.last_id FROM poll_units c \
                       WHERE c.round_id = $2 AND NOT c.done AND c.claimed_by IS NOT NULL \
                       AND c.claimed_until >= now() AND {HOLDER_ALIVE}) \
                     SELECT count(*), min(next_due_at) FROM message_tracking t \
                     WHERE state = 'OPEN' AND next_due_at <= $1 AND NOT EXISTS ( \
                       SELECT 1 FROM held h WHERE h.batch_id = t.carrier_batch_id \
                       OR (h.batch_id IS NULL AND t.carrier_batch_id IS NULL \
                         AND (t.submitted_at, t.tracking_id) >= (h.first_at, h.first_id) \
                         AND (t.submitted_at, t.tracking_id) <= (h.last_at, h.last_id)))"
                ),
                &[&cutoff, &round],
            )
            .context("counting the messages left due")?;
        Ok((row.get::<_, i64>(0) as u64, row.get(1)))
    }

    fn begin_cycle(&mut self, started_at: DateTime<Utc>, cycle_now: DateTime<Utc>) -> Result<i64> {
        let (round, token) = (self.round, self.token.clone());
        let run = |client: &mut Client| -> Result<i64> {
            let mut tx = client.transaction()?;
            // A cycle still marked running whose run has no session left died (runs share rounds here, so a
            // running cycle of a live run is no sign of a crash).
            let abandoned = tx.execute(
                &format!(
                    "UPDATE poll_cycles c SET outcome = 'abandoned', \
                     error = 'the run ended without finishing the cycle (killed or crashed)' \
                     WHERE outcome = 'running' AND NOT EXISTS (SELECT 1 FROM pg_stat_activity a \
                       WHERE c.run_token IS NOT NULL AND a.application_name = '{SESSION_PREFIX}' || c.run_token)"
                ),
                &[],
            )?;
            warn_abandoned(abandoned);
            let id: i64 = tx
                .query_one(
                    "INSERT INTO poll_cycles (started_at, cycle_now, host, pid, outcome, round_id, run_token) \
                     VALUES ($1, date_trunc('second', $2::timestamptz), $3, $4, 'running', $5, $6) RETURNING id",
                    &[
                        &started_at,
                        &cycle_now,
                        &crate::host::name(),
                        &(std::process::id() as i32),
                        &round,
                        &token,
                    ],
                )?
                .get(0);
            tx.commit()?;
            Ok(id)
        };
        run(&mut self.client).context("recording the cycle start")
    }

    fn record(
        &mut self,
        cycle_id: i64,
        polled_at: DateTime<Utc>,
        records: &[PollRecord],
    ) -> Result<Written> {
        self.record_units(cycle_id, polled_at, records, &[])
    }

    fn finish_cycle(&mut self, s: &Summary) -> Result<()> {
        let run = |client: &mut Client| -> Result<()> {
            let mut tx = client.transaction()?;
            let sets: String = COUNTERS
                .iter()
                .enumerate()
                .map(|(i, c)| format!(", {} = ${}", c.column, i + 7))
                .collect();
            let counts: Vec<i64> = COUNTERS.iter().map(|c| (c.get)(s) as i64).collect();
            let exit_code = s.exit_code.map(i16::from);
            let error = clean(s.error.as_deref());
            let mut params: Vec<&(dyn ToSql + Sync)> = vec![
                &s.cycle_id,
                &s.finished_at,
                &s.duration_seconds,
                &s.outcome,
                &exit_code,
                &error,
            ];
            params.extend(counts.iter().map(|c| c as &(dyn ToSql + Sync)));
            tx.execute(
                &format!(
                    "UPDATE poll_cycles SET finished_at = $2::text::timestamptz, duration_seconds = $3, \
                     outcome = $4, exit_code = $5, error = $6{sets} WHERE id = $1"
                ),
                &params,
            )?;
            let (names, values): (Vec<String>, Vec<i64>) = totals_of(s)
                .into_iter()
                .map(|(name, value)| (name, value as i64))
                .unzip();
            tx.execute(
                "INSERT INTO poller_totals (name, value) SELECT * FROM unnest($1::text[], $2::bigint[]) \
                 ON CONFLICT (name) DO UPDATE SET value = poller_totals.value + excluded.value",
                &[&names, &values],
            )?;
            if s.exit_code == Some(0) {
                tx.execute(
                    "INSERT INTO poller_state (key, value) VALUES ($1, $2) \
                     ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    &[&LAST_SUCCESS_KEY, &s.finished_at],
                )?;
            }
            tx.commit()?;
            Ok(())
        };
        run(&mut self.client).context("recording the cycle end")
    }

    fn metrics_data(&mut self, now: DateTime<Utc>) -> Result<MetricsData> {
        let run = |client: &mut Client| -> Result<MetricsData> {
            let totals = client
                .query("SELECT name, value FROM poller_totals ORDER BY name", &[])?
                .iter()
                .map(|r| (r.get::<_, String>(0), r.get::<_, i64>(1) as u64))
                .collect();
            let last_success: Option<String> = client
                .query_opt(
                    "SELECT value FROM poller_state WHERE key = $1",
                    &[&LAST_SUCCESS_KEY],
                )?
                .map(|r| r.get(0));
            let since = now - chrono::TimeDelta::hours(24);
            let closed_24h = client
                .query(
                    "SELECT state, count(*) FROM message_tracking WHERE closed_at IS NOT NULL AND closed_at > $1 \
                     AND state IN ('DELIVERED', 'FAILED', 'UNCONFIRMED') GROUP BY state",
                    &[&since],
                )?
                .iter()
                .map(|r| (r.get::<_, String>(0), r.get::<_, i64>(1) as u64))
                .collect();
            Ok(MetricsData {
                totals,
                last_success: last_success.and_then(|t| timefmt::parse(&t).ok()),
                closed_24h,
            })
        };
        run(&mut self.client).context("reading metrics data")
    }

    fn last_finished_cycle(&mut self) -> Result<Option<Summary>> {
        let id: Option<i64> = self
            .client
            .query_one(
                "SELECT max(id) FROM poll_cycles WHERE outcome NOT IN ('running', 'abandoned')",
                &[],
            )
            .map(|r| r.get(0))
            .context("reading poll_cycles")?;
        let Some(id) = id else { return Ok(None) };
        Ok(self.cycles_where("id = $1", id, 1)?.pop())
    }

    fn counts(&mut self) -> Result<(u64, u64, u64)> {
        let sql = format!(
            "SELECT (SELECT count(*) FROM {}), \
             (SELECT count(*) FROM message_tracking WHERE state = 'OPEN'), (SELECT count(*) FROM poll_cycles)",
            self.target.submissions
        );
        self.client
            .query_one(&sql, &[])
            .map(|r| {
                (
                    r.get::<_, i64>(0) as u64,
                    r.get::<_, i64>(1) as u64,
                    r.get::<_, i64>(2) as u64,
                )
            })
            .context("counting rows")
    }

    fn prune(&mut self, cutoff: DateTime<Utc>, dry_run: bool, chunk: usize) -> Result<(u64, u64)> {
        const AUDIT: &str = "FROM sms_delivery_confirmations WHERE polled_at < $1 AND NOT EXISTS \
            (SELECT 1 FROM message_tracking t WHERE t.tracking_id = sms_delivery_confirmations.tracking_id \
             AND t.state = 'OPEN')";
        const CYCLES: &str = "FROM poll_cycles WHERE started_at < $1 AND outcome != 'running'";
        let run = |client: &mut Client| -> Result<(u64, u64)> {
            if dry_run {
                let mut count = |from: &str| -> Result<u64> {
                    Ok(client
                        .query_one(&format!("SELECT count(*) {from}"), &[&cutoff])?
                        .get::<_, i64>(0) as u64)
                };
                return Ok((count(AUDIT)?, count(CYCLES)?));
            }
            let mut totals = (0, 0);
            for (from, total) in [(AUDIT, &mut totals.0), (CYCLES, &mut totals.1)] {
                let table = from.split_whitespace().nth(1).unwrap_or_default();
                let sql =
                    format!("DELETE FROM {table} WHERE id IN (SELECT id {from} LIMIT {chunk})");
                loop {
                    let deleted = client.execute(&sql, &[&cutoff])?;
                    *total += deleted;
                    if (deleted as usize) < chunk {
                        break;
                    }
                }
            }
            Ok(totals)
        };
        run(&mut self.client).context("pruning old rows")
    }

    fn cycles(&mut self, n: u64) -> Result<Vec<Summary>> {
        self.cycles_where("$1::bigint = $1::bigint", 0, n)
    }

    fn close(&mut self, tracking_id: &str, reason: &str, now: DateTime<Utc>) -> Result<Closed> {
        let run = |me: &mut Postgres| -> Result<Closed> {
            // Stored to the second, as the cycles store their clocks.
            let now = timefmt::parse(&timefmt::format(now))?;
            let submissions = me.target.submissions.clone();
            let mut tx = me.client.transaction()?;
            let closed = close_by_hand(
                &mut Closing {
                    tx: &mut tx,
                    submissions: &submissions,
                },
                tracking_id,
                reason,
                now,
            )?;
            tx.commit()?;
            Ok(closed)
        };
        run(self).with_context(|| format!("closing {tracking_id:?}"))
    }

    fn history(&mut self, tracking_id: &str) -> Result<Option<History>> {
        let run = |me: &mut Postgres| -> Result<Option<History>> {
            let head_sql = format!(
                "SELECT COALESCE(t.customer_id, s.customer_id::text), COALESCE(t.phone_number, s.phone_number::text), \
                 COALESCE(t.carrier_batch_id, s.carrier_batch_id::text), COALESCE({}, s.submitted_at::text), \
                 t.state, COALESCE(t.polls, 0), {}, {}, t.note \
                 FROM (SELECT $1::text AS id) q \
                 LEFT JOIN LATERAL (SELECT * FROM {} x WHERE x.tracking_id::text = q.id LIMIT 1) s ON true \
                 LEFT JOIN message_tracking t ON t.tracking_id = q.id \
                 WHERE s.tracking_id IS NOT NULL OR t.tracking_id IS NOT NULL",
                secs("t.submitted_at"),
                secs("t.next_due_at"),
                secs("t.closed_at"),
                me.target.submissions
            );
            let Some(r) = me.client.query_opt(&head_sql, &[&tracking_id])? else {
                return Ok(None);
            };
            let mut history = History {
                tracking_id: tracking_id.to_string(),
                customer_id: r.get(0),
                phone_number: r.get(1),
                carrier_batch_id: r.get(2),
                // The dispatcher's own value, in the stored form when it can be read.
                submitted_at: r
                    .get::<_, Option<String>>(3)
                    .map(|t| timefmt::parse_submitted(&t).map_or(t, timefmt::format)),
                state: r.get(4),
                polls: r.get::<_, i32>(5) as i64,
                next_due_at: r.get(6),
                closed_at: r.get(7),
                note: r.get(8),
                results: Vec::new(),
            };
            let sql = format!(
                "SELECT poll_attempt, {}, delivery_status, carrier_status, carrier_found, failure_code, \
                 failure_reason, {}, cycle_id, {}, entry, failure_category FROM sms_delivery_confirmations \
                 WHERE tracking_id = $1 ORDER BY poll_attempt",
                secs("polled_at"),
                secs("delivery_confirmed_at"),
                millis("created_at")
            );
            history.results = me
                .client
                .query(&sql, &[&tracking_id])?
                .iter()
                .map(|r| AuditRow {
                    poll_attempt: r.get::<_, i32>(0) as i64,
                    polled_at: r.get(1),
                    delivery_status: r.get(2),
                    carrier_status: r.get(3),
                    carrier_found: r.get(4),
                    failure_code: r.get(5),
                    failure_reason: r.get(6),
                    delivery_confirmed_at: r.get(7),
                    cycle_id: r.get(8),
                    created_at: r.get(9),
                    entry: r.get(10),
                    failure_category: r.get(11),
                })
                .collect();
            Ok(Some(history))
        };
        run(self).with_context(|| format!("reading the history of {tracking_id:?}"))
    }
}

impl Rounds for Postgres {
    fn record_units(
        &mut self,
        cycle_id: i64,
        polled_at: DateTime<Utc>,
        records: &[PollRecord],
        units: &[i64],
    ) -> Result<Written> {
        let round = self.round;
        let run = |me: &mut Postgres| -> Result<Written> {
            let polled_at = timefmt::parse(&timefmt::format(polled_at))?;
            let created_at = Utc::now();
            let mut tx = me.client.transaction()?;
            // A round takes every submission in before it polls: every message here is tracked already. One
            // guarded update for all (the poll count must still be the one read).
            if let Some(first) = records.iter().find(|r| r.message.new) {
                bail!(
                    "message {:?} reached the writer without a tracking row: a round takes every submission in \
                     before it polls",
                    first.message.tracking_id
                );
            }
            let stored = phases::Phase::UpdateTracking
                .time(|| update_tracking(&mut tx, records, polled_at))?;
            for (r, &ok) in records.iter().zip(&stored) {
                if !ok {
                    warn_moved_on(&r.message.tracking_id);
                }
            }
            let audit = AuditRows {
                cycle_id,
                polled_at,
                created_at,
            };
            let kept: Vec<&PollRecord> = records
                .iter()
                .zip(&stored)
                .filter(|(_, s)| **s)
                .map(|(r, _)| r)
                .collect();
            phases::Phase::WriteResults.time(|| audit.copy(&mut tx, &kept))?;
            if let (Some(round), false) = (round, units.is_empty()) {
                phases::Phase::Rounds.time(|| {
                    tx.execute(
                        "UPDATE poll_units SET done = true WHERE round_id = $1 AND unit_id = ANY($2)",
                        &[&round, &units.iter().map(|u| *u as i32).collect::<Vec<_>>()],
                    )
                })?;
            }
            phases::Phase::Commit.time(|| tx.commit())?;
            Ok(Written {
                stored,
                repeated: 0,
            })
        };
        run(self).context("writing poll results")
    }

    fn join_round(&mut self, me: &str, now: DateTime<Utc>, ttl: Duration) -> Result<Join> {
        let ttl_ms = ttl.as_millis() as f64;
        let run = |pg: &mut Postgres| -> Result<Join> {
            pg.name_session(me)?;
            let mut tx = pg.client.transaction()?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&ROUND_LOCK])?;
            // A round lives while its time is not up and one of its runs still has a session: a round whose runs
            // all ended (at their deadline, or killed) does not hold up the next run, whatever its clock.
            let latest = tx.query_opt(
                &format!(
                    "SELECT r.id, r.cycle_now, r.phase, r.coordinator, r.expires_at > now() AND ( \
                       EXISTS (SELECT 1 FROM pg_stat_activity a \
                         WHERE a.application_name = '{SESSION_PREFIX}' || r.coordinator) \
                       OR EXISTS (SELECT 1 FROM poll_cycles c JOIN pg_stat_activity a \
                         ON a.application_name = '{SESSION_PREFIX}' || c.run_token WHERE c.round_id = r.id)), \
                     r.started_at > now() - $1 * interval '1 millisecond', {} \
                     FROM poll_rounds r ORDER BY r.id DESC LIMIT 1",
                    secs("r.cycle_now")
                ),
                &[&ttl_ms],
            )?;
            if let Some(r) = latest {
                let (id, cycle_now, phase): (i64, DateTime<Utc>, String) =
                    (r.get(0), r.get(1), r.get(2));
                let (live, recent): (bool, bool) = (r.get(4), r.get(5));
                let mine = (cycle_now - now).abs() <= ROUND_SPAN;
                // A round that is over leaves nothing for a late replica, unless some of its work failed (a
                // carrier outage): a run for the same clock then retries what is still due, in a new round.
                let over = phase == "done"
                    && mine
                    && recent
                    && !pg_due_exists(&mut tx, schedule::cutoff(cycle_now))?;
                match (phase.as_str(), live, mine) {
                    ("done", _, true) if over => {
                        tx.commit()?;
                        return Ok(Join::Finished {
                            round: id,
                            cycle_now,
                        });
                    }
                    ("intake" | "polling", true, true) => {
                        tx.commit()?;
                        return Ok(Join::Help {
                            round: id,
                            cycle_now,
                        });
                    }
                    ("intake" | "polling", true, false) => {
                        return Ok(Join::Busy {
                            round: id,
                            cycle_now: r.get(6),
                            coordinator: r.get(3),
                        });
                    }
                    _ => {}
                }
                tx.execute(
                    "UPDATE poll_rounds SET phase = 'done', finished_at = COALESCE(finished_at, now()) \
                     WHERE id <= $1 AND phase <> 'done'",
                    &[&id],
                )?;
            }
            let id: i64 = tx
                .query_one(
                    "INSERT INTO poll_rounds (cycle_now, phase, coordinator, started_at, expires_at) \
                     VALUES (date_trunc('second', $1::timestamptz), 'intake', $2, now(), \
                     now() + $3 * interval '1 millisecond') RETURNING id",
                    &[&now, &me, &ttl_ms],
                )?
                .get(0);
            // Units of earlier rounds are spent.
            tx.execute("DELETE FROM poll_units WHERE round_id < $1", &[&id])?;
            tx.commit()?;
            Ok(Join::Coordinate {
                round: id,
                cycle_now: now,
            })
        };
        let joined = run(self).context("joining the cycle's round")?;
        if let Join::Coordinate { round, .. }
        | Join::Help { round, .. }
        | Join::Finished { round, .. } = joined
        {
            self.round = Some(round);
        }
        Ok(joined)
    }

    fn round_phase(&mut self, round: i64) -> Result<Phase> {
        let phase: String = self
            .client
            .query_one("SELECT phase FROM poll_rounds WHERE id = $1", &[&round])
            .map(|r| r.get(0))
            .context("reading the round's phase")?;
        Ok(match phase.as_str() {
            "intake" => Phase::Intake,
            "polling" => Phase::Polling,
            _ => Phase::Done,
        })
    }

    fn take_over_round(&mut self, round: i64, me: &str) -> Result<bool> {
        let run = |pg: &mut Postgres| -> Result<bool> {
            pg.name_session(me)?;
            let taken = pg.client.execute(
                &format!(
                    "UPDATE poll_rounds r SET coordinator = $2 WHERE id = $1 AND phase = 'intake' AND NOT EXISTS \
                     (SELECT 1 FROM pg_stat_activity a WHERE a.application_name = '{SESSION_PREFIX}' || r.coordinator)"
                ),
                &[&round, &me],
            )?;
            Ok(taken == 1)
        };
        run(self).context("taking over the round's intake")
    }

    fn publish_units(&mut self, round: i64, cutoff: DateTime<Utc>, lone: LoneJobs) -> Result<u64> {
        let run = |client: &mut Client| -> Result<u64> {
            let mut tx = client.transaction()?;
            // Batches first, the longest-waiting first (as the due groups are).
            let batches = tx.execute(
                "INSERT INTO poll_units (round_id, unit_id, batch_id, messages) \
                 SELECT $1, row_number() OVER (ORDER BY min(next_due_at), carrier_batch_id), carrier_batch_id, count(*) \
                 FROM message_tracking WHERE state = 'OPEN' AND next_due_at <= $2 AND carrier_batch_id IS NOT NULL \
                 GROUP BY carrier_batch_id",
                &[&round, &cutoff],
            )?;
            // Then messages without a batch in submission order, in runs of `lone.chunk` (as many as the
            // carrier's bulk question covers), each within one minute of submission where the carrier is listed
            // by time.
            let lone_units = tx.execute(
                "INSERT INTO poll_units (round_id, unit_id, first_at, first_id, last_at, last_id, messages) \
                 SELECT $1, $5 + row_number() OVER (ORDER BY first_at, first_id), first_at, first_id, last_at, \
                   last_id, n \
                 FROM ( \
                   SELECT DISTINCT ON (minute, chunk) \
                     first_value(submitted_at) OVER w AS first_at, first_value(tracking_id) OVER w AS first_id, \
                     last_value(submitted_at) OVER w AS last_at, last_value(tracking_id) OVER w AS last_id, \
                     count(*) OVER w AS n \
                   FROM ( \
                     SELECT submitted_at, tracking_id, minute, \
                       (row_number() OVER (PARTITION BY minute ORDER BY submitted_at, tracking_id) - 1) / $3 AS chunk \
                     FROM ( \
                       SELECT submitted_at, tracking_id, \
                         CASE WHEN $4 THEN floor(extract(epoch FROM submitted_at) / 60) END AS minute \
                       FROM message_tracking \
                       WHERE state = 'OPEN' AND next_due_at <= $2 AND carrier_batch_id IS NULL \
                     ) due \
                   ) numbered \
                   WINDOW w AS (PARTITION BY minute, chunk ORDER BY submitted_at, tracking_id \
                     ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING) \
                   ORDER BY minute, chunk \
                 ) u",
                &[
                    &round,
                    &cutoff,
                    &(lone.chunk.max(1) as i64),
                    &lone.by_minute,
                    &(batches as i64),
                ],
            )?;
            tx.execute(
                "UPDATE poll_rounds SET phase = 'polling' WHERE id = $1 AND phase = 'intake'",
                &[&round],
            )?;
            tx.commit()?;
            Ok(batches + lone_units)
        };
        run(&mut self.client).context("publishing the round's work")
    }

    fn claim_units(
        &mut self,
        round: i64,
        me: &str,
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<Unit>> {
        // Units finished on this connection are of this round.
        self.round = Some(round);
        let run = |pg: &mut Postgres| -> Result<Vec<Unit>> {
            pg.name_session(me)?;
            let rows = pg.client.query(
                &format!(
                    "UPDATE poll_units u SET claimed_by = $2, claimed_until = now() + $4 * interval '1 millisecond' \
                     WHERE (u.round_id, u.unit_id) IN ( \
                       SELECT c.round_id, c.unit_id FROM poll_units c WHERE c.round_id = $1 AND NOT c.done \
                       AND (c.claimed_by IS NULL OR c.claimed_until < now() OR NOT {HOLDER_ALIVE}) \
                       ORDER BY c.unit_id LIMIT $3 FOR UPDATE SKIP LOCKED) \
                     RETURNING u.unit_id, u.batch_id, u.first_at, u.first_id, u.last_at, u.last_id, u.messages"
                ),
                &[&round, &me, &(limit as i64), &(lease.as_millis() as f64)],
            )?;
            let mut units: Vec<Unit> = rows
                .iter()
                .map(|r| Unit {
                    id: r.get::<_, i32>(0).into(),
                    batch_id: r.get(1),
                    first: bound(r.get(2), r.get(3)),
                    last: bound(r.get(4), r.get(5)),
                    messages: r.get::<_, i32>(6) as u64,
                })
                .collect();
            units.sort_by_key(|u| u.id);
            Ok(units)
        };
        run(self).context("claiming work of the round")
    }

    fn renew_units(&mut self, round: i64, me: &str, lease: Duration) -> Result<u64> {
        self.client
            .execute(
                "UPDATE poll_units SET claimed_until = now() + $3 * interval '1 millisecond' \
                 WHERE round_id = $1 AND claimed_by = $2 AND NOT done",
                &[&round, &me, &(lease.as_millis() as f64)],
            )
            .context("renewing this run's claims")
    }

    fn release_units(&mut self, round: i64, me: &str) -> Result<u64> {
        self.client
            .execute(
                "UPDATE poll_units SET claimed_by = NULL, claimed_until = NULL \
                 WHERE round_id = $1 AND claimed_by = $2 AND NOT done",
                &[&round, &me],
            )
            .context("handing back this run's unfinished work")
    }

    fn unit_messages(&mut self, unit: &Unit, cutoff: DateTime<Utc>) -> Result<Vec<DueMessage>> {
        let (Some((first_at, first_id)), Some((last_at, last_id))) = (&unit.first, &unit.last)
        else {
            anyhow::bail!("unit {} of messages without a batch has no bounds", unit.id);
        };
        self.client
            .query(
                "SELECT tracking_id, customer_id, phone_number, carrier_batch_id, submitted_at, polls \
                 FROM message_tracking WHERE state = 'OPEN' AND next_due_at <= $1 AND carrier_batch_id IS NULL \
                 AND (submitted_at, tracking_id) >= ($2, $3) AND (submitted_at, tracking_id) <= ($4, $5) \
                 ORDER BY submitted_at, tracking_id",
                &[&cutoff, first_at, first_id, last_at, last_id],
            )
            .map_err(anyhow::Error::from)
            .and_then(|rows| rows.iter().map(due_message).collect())
            .context("reading a unit's messages")
    }

    fn end_round(&mut self, round: i64) -> Result<()> {
        self.client
            .execute(
                "UPDATE poll_rounds SET phase = 'done', finished_at = now() WHERE id = $1 AND phase = 'polling' \
                 AND NOT EXISTS (SELECT 1 FROM poll_units WHERE round_id = $1 AND NOT done)",
                &[&round],
            )
            .context("ending the round")?;
        Ok(())
    }
}

/// Moves the tracking rows of `records` on, in one guarded update: a row is updated only while its poll count is
/// the one read and it is open. Returns whether each was.
fn update_tracking(
    tx: &mut postgres::Transaction,
    records: &[PollRecord],
    polled_at: DateTime<Utc>,
) -> Result<Vec<bool>> {
    if records.is_empty() {
        return Ok(Vec::new());
    }
    let mut ids = Vec::with_capacity(records.len());
    let mut polls = Vec::with_capacity(records.len());
    let mut states = Vec::with_capacity(records.len());
    let mut due = Vec::with_capacity(records.len());
    let mut statuses = Vec::with_capacity(records.len());
    let mut notes = Vec::with_capacity(records.len());
    for r in records {
        ids.push(r.message.tracking_id.as_str());
        polls.push(r.message.polls as i32);
        states.push(r.state.as_str());
        due.push(r.next_due_at);
        statuses.push(r.status.as_str());
        notes.push(clean(r.note()));
    }
    let rows = tx.query(
        "UPDATE message_tracking t SET polls = t.polls + 1, state = u.state, next_due_at = u.due, \
         last_status = CASE WHEN u.note IS NULL THEN u.status ELSE t.last_status END, \
         last_polled_at = CASE WHEN u.note IS NULL THEN $7::timestamptz ELSE t.last_polled_at END, \
         closed_at = CASE WHEN u.state = 'OPEN' THEN NULL ELSE $7::timestamptz END, note = COALESCE(u.note, t.note) \
         FROM unnest($1::text[], $2::int[], $3::text[], $4::timestamptz[], $5::text[], $6::text[]) \
           AS u(id, polls, state, due, status, note) \
         WHERE t.tracking_id = u.id AND t.polls = u.polls AND t.state = 'OPEN' \
         RETURNING t.tracking_id",
        &[&ids, &polls, &states, &due, &statuses, &notes, &polled_at],
    )?;
    let done: std::collections::HashSet<&str> = rows.iter().map(|r| r.get::<_, &str>(0)).collect();
    Ok(records
        .iter()
        .map(|r| done.contains(r.message.tracking_id.as_str()))
        .collect())
}

/// The audit rows of one write: what they share.
struct AuditRows {
    cycle_id: i64,
    polled_at: DateTime<Utc>,
    created_at: DateTime<Utc>,
}

impl AuditRows {
    /// Appends an audit row per record, by binary COPY.
    fn copy(&self, tx: &mut postgres::Transaction, records: &[&PollRecord]) -> Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        let sink = tx.copy_in(
            "COPY sms_delivery_confirmations (tracking_id, customer_id, phone_number, carrier_batch_id, \
             delivery_status, failure_code, failure_reason, polled_at, delivery_confirmed_at, \
             poll_attempt, created_at, cycle_id, carrier_status, carrier_found, entry, failure_category) \
             FROM STDIN BINARY",
        )?;
        let mut writer = BinaryCopyInWriter::new(sink, &AUDIT_TYPES);
        for r in records {
            let m = r.message;
            let confirmed = r
                .confirmed_at
                .as_deref()
                .and_then(|t| timefmt::parse(t).ok());
            let category = r.failure_category.map(|c| c.as_str());
            let row: [&(dyn ToSql + Sync); 16] = [
                &m.tracking_id,
                &m.customer_id,
                &m.phone_number,
                &m.batch_id,
                &r.status.as_str(),
                &clean(r.failure_code),
                &clean(r.failure_reason),
                &self.polled_at,
                &confirmed,
                &((m.polls + 1) as i32),
                &self.created_at,
                &self.cycle_id,
                &clean(r.carrier_status),
                &r.carrier_status.is_some(),
                &r.entry.as_str(),
                &category,
            ];
            writer.write(&row)?;
        }
        writer.finish()?;
        Ok(())
    }
}

/// The column types of an audit row, in COPY order.
const AUDIT_TYPES: [Type; 16] = [
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TIMESTAMPTZ,
    Type::TIMESTAMPTZ,
    Type::INT4,
    Type::TIMESTAMPTZ,
    Type::INT8,
    Type::TEXT,
    Type::BOOL,
    Type::TEXT,
    Type::TEXT,
];

/// Closing by hand, in one PostgreSQL transaction.
struct Closing<'a, 'b> {
    tx: &'a mut postgres::Transaction<'b>,
    /// The dispatcher's table, quoted.
    submissions: &'a str,
}

impl CloseSteps for Closing<'_, '_> {
    fn tracked(&mut self, tracking_id: &str) -> Result<Option<(String, i64, Addressee)>> {
        Ok(self
            .tx
            .query_opt(
                "SELECT state, polls, customer_id, phone_number, carrier_batch_id FROM message_tracking \
                 WHERE tracking_id = $1 FOR UPDATE",
                &[&tracking_id],
            )?
            .map(|r| {
                let to = Addressee {
                    customer_id: r.get(2),
                    phone_number: r.get(3),
                    batch_id: r.get(4),
                };
                (r.get(0), i64::from(r.get::<_, i32>(1)), to)
            }))
    }

    fn submission(&mut self, tracking_id: &str) -> Result<Option<(Addressee, Option<String>)>> {
        let sql = format!(
            "SELECT customer_id::text, phone_number::text, carrier_batch_id::text, submitted_at::text \
             FROM {} WHERE tracking_id::text = $1 LIMIT 1",
            self.submissions
        );
        Ok(self.tx.query_opt(&sql, &[&tracking_id])?.map(|r| {
            let to = Addressee {
                customer_id: r.get(0),
                phone_number: r.get(1),
                batch_id: r.get(2),
            };
            (to, r.get(3))
        }))
    }

    fn end_tracking(&mut self, tracking_id: &str, note: &str, now: DateTime<Utc>) -> Result<()> {
        self.tx.execute(
            "UPDATE message_tracking SET polls = polls + 1, state = 'UNCONFIRMED', next_due_at = NULL, \
             closed_at = $2, note = $3 WHERE tracking_id = $1",
            &[&tracking_id, &now, &clean(Some(note))],
        )?;
        Ok(())
    }

    fn take_in_closed(
        &mut self,
        tracking_id: &str,
        to: &Addressee,
        submitted_at: Option<DateTime<Utc>>,
        note: &str,
        now: DateTime<Utc>,
    ) -> Result<()> {
        self.tx.execute(
            "INSERT INTO message_tracking (tracking_id, customer_id, phone_number, carrier_batch_id, submitted_at, \
             state, polls, closed_at, note) VALUES ($1, $2, $3, $4, $5, 'UNCONFIRMED', 1, $6, $7)",
            &[
                &tracking_id,
                &to.customer_id,
                &to.phone_number,
                &to.batch_id,
                &submitted_at,
                &now,
                &clean(Some(note)),
            ],
        )?;
        Ok(())
    }

    fn closing_entry(
        &mut self,
        tracking_id: &str,
        to: &Addressee,
        note: &str,
        now: DateTime<Utc>,
        attempt: i64,
    ) -> Result<()> {
        self.tx.execute(
            "INSERT INTO sms_delivery_confirmations (tracking_id, customer_id, phone_number, carrier_batch_id, \
             delivery_status, failure_reason, polled_at, poll_attempt, created_at, cycle_id, carrier_found, \
             entry) VALUES ($1, $2, $3, $4, 'PENDING', $5, $6, $7, $8, 0, false, 'close')",
            &[
                &tracking_id,
                &to.customer_id,
                &to.phone_number,
                &to.batch_id,
                &clean(Some(note)),
                &now,
                &(attempt as i32),
                &Utc::now(),
            ],
        )?;
        Ok(())
    }
}

/// Whether any message is due at `cutoff`.
fn pg_due_exists(client: &mut impl GenericClient, cutoff: DateTime<Utc>) -> Result<bool> {
    Ok(client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM message_tracking WHERE state = 'OPEN' AND next_due_at <= $1)",
            &[&cutoff],
        )?
        .get(0))
}

/// A lone unit's bound, from its two columns.
fn bound(at: Option<DateTime<Utc>>, id: Option<String>) -> Option<(DateTime<Utc>, String)> {
    at.zip(id)
}

fn due_message(row: &Row) -> Result<DueMessage> {
    let tracking_id: String = row.get(0);
    let submitted_at: Option<DateTime<Utc>> = row.get(4);
    let submitted_at = submitted_at.with_context(|| {
        format!("message_tracking row {tracking_id:?} is OPEN without a submitted_at")
    })?;
    Ok(DueMessage {
        tracking_id,
        customer_id: row.get(1),
        phone_number: row.get(2),
        batch_id: row.get(3),
        submitted_at,
        polls: row.get::<_, i32>(5) as i64,
        new: false,
    })
}

/// What to tell the operator about an error of this backend.
pub fn hint(err: &anyhow::Error) -> Option<String> {
    use postgres::error::SqlState;
    let pg = err
        .chain()
        .find_map(|e| e.downcast_ref::<postgres::Error>())?;
    if let Some(code) = pg.code() {
        return match code {
            c if *c == SqlState::INVALID_PASSWORD
                || *c == SqlState::INVALID_AUTHORIZATION_SPECIFICATION =>
            {
                Some(
                    "the server refused the user or password: check the user in --db and the password in \
                     --db-password-file"
                        .into(),
                )
            }
            c if *c == SqlState::INSUFFICIENT_PRIVILEGE => Some(
                "the poller's user lacks a grant: see \"PostgreSQL\" in the README for the grants it needs".into(),
            ),
            c if *c == SqlState::LOCK_NOT_AVAILABLE => Some(
                "another session held a lock for longer than --busy-timeout".into(),
            ),
            c if *c == SqlState::QUERY_CANCELED => Some(format!(
                "a statement ran longer than the poller's statement_timeout ({}s)",
                STATEMENT_TIMEOUT.as_secs()
            )),
            c if *c == SqlState::ADMIN_SHUTDOWN || *c == SqlState::CRASH_SHUTDOWN => Some(
                "the server shut down during the run; what was committed stays, the next run goes on".into(),
            ),
            _ => None,
        };
    }
    if pg.is_closed() {
        return Some(
            "the connection to the server was lost; what was committed stays, the next run goes on"
                .into(),
        );
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(url: &str) -> Result<PgTarget> {
        PgTarget::parse(url, None, "sms_submissions")
    }

    #[test]
    fn a_text_literal_escapes_quotes_and_backslashes() {
        assert_eq!(
            text_literal("2025-12-01T09:00:00Z"),
            "E'2025-12-01T09:00:00Z'"
        );
        assert_eq!(text_literal(r"it's a \ id"), r"E'it''s a \\ id'");
    }

    #[test]
    fn tls_is_required_off_this_machine_unless_the_url_says_otherwise() {
        assert_eq!(
            parse("postgres://u@127.0.0.1/db").unwrap().ssl,
            SslMode::Disable
        );
        assert_eq!(
            parse("postgres://u@localhost:5433/db").unwrap().ssl,
            SslMode::Disable
        );
        assert_eq!(
            parse("postgresql://u@%2Fvar%2Frun%2Fpostgresql/db")
                .unwrap()
                .ssl,
            SslMode::Disable
        );
        assert_eq!(
            parse("postgres://u@db.internal/db").unwrap().ssl,
            SslMode::VerifyFull
        );
        assert_eq!(
            parse("postgres://u@10.0.0.5/db?sslmode=require")
                .unwrap()
                .ssl,
            SslMode::Require
        );
        assert_eq!(
            parse("postgres://u@db.internal/db?sslmode=disable")
                .unwrap()
                .ssl,
            SslMode::Disable
        );
        for mode in ["prefer", "allow"] {
            let e = parse(&format!("postgres://u@db.internal/db?sslmode={mode}")).unwrap_err();
            assert!(
                format!("{e:#}").contains("may connect without TLS"),
                "{e:#}"
            );
        }
        assert!(parse("postgres://u@h/db?sslmode=verify").is_err());
        let e = parse("postgres://u@h/db?sslmode=disable&sslrootcert=/ca.pem").unwrap_err();
        assert!(format!("{e:#}").contains("sslrootcert"));
    }

    #[test]
    fn the_password_is_never_shown() {
        let t = parse("postgres://u:hunter2@db.internal:5432/db?sslmode=require&connect_timeout=5")
            .unwrap();
        let shown = format!("{t} {t:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(
            shown.contains("postgres://u:***@db.internal:5432/db?sslmode=require"),
            "{shown}"
        );
        assert_eq!(
            redact::url("postgres://u@h/db?password=hunter2&x=1"),
            "postgres://u@h/db?password=***&x=1"
        );
        let e = parse("postgres://u:hunter2@h:notaport/db").unwrap_err();
        assert!(!format!("{e:#}").contains("hunter2"), "{e:#}");
        // The password file wins over the URL's.
        let t = PgTarget::parse("postgres://u:old@h/db", Some("new".into()), "t").unwrap();
        assert_eq!(t.config.get_password(), Some(&b"new"[..]));
    }

    #[test]
    fn the_url_sets_timeouts_the_operator_did_not() {
        let t = parse("postgres://u@h/db").unwrap();
        assert_eq!(t.config.get_connect_timeout(), Some(&CONNECT_TIMEOUT));
        assert!(t.config.get_keepalives());
        // The URL's tcp_user_timeout is in seconds.
        let t = parse("postgres://u@h/db?connect_timeout=3&tcp_user_timeout=7").unwrap();
        assert_eq!(
            t.config.get_connect_timeout(),
            Some(&Duration::from_secs(3))
        );
        assert_eq!(
            t.config.get_tcp_user_timeout(),
            Some(&Duration::from_secs(7))
        );
        assert!(parse("postgres://h/db").is_err(), "a user is required");
    }

    #[test]
    fn the_submissions_table_is_an_identifier() {
        assert_eq!(
            quote_table("sms_submissions").unwrap().0,
            "\"sms_submissions\""
        );
        assert_eq!(
            quote_table("notify.sends").unwrap().0,
            "\"notify\".\"sends\""
        );
        for bad in ["", "a.b.c", "x; DROP TABLE y", "1abc", "a\"b", "sends "] {
            assert!(quote_table(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn nul_characters_are_dropped_and_nothing_else() {
        assert_eq!(clean(Some("a\0b\0")).as_deref(), Some("ab"));
        assert_eq!(clean(Some("äöü 🚀")).as_deref(), Some("äöü 🚀"));
        assert_eq!(clean(None), None);
    }
}
