//! The command line as typed: flags, env fallbacks and help text. Values stay raw strings here; `config`
//! validates them, so that a bad value is a configuration error (exit 78) that names its flag and env var.

use std::path::PathBuf;

use clap::{ArgAction, Args, Parser, Subcommand};

use crate::logging::LogFormat;

macro_rules! exit_codes {
    () => {
        "\
Exit codes:
  0   every due message was polled (or nothing was due)
  64  usage error: unknown flag or missing argument
  69  carrier unavailable: nothing could be polled
  73  another cycle holds the lease on this database; this run did nothing
  74  database error (including a schema that needs `dlr-poller migrate`)
  75  partial: some batches failed or the deadline hit; the next run finishes the work
  77  credentials rejected by the carrier (401/403)
  78  configuration error: a missing or invalid URL, token, flag or env value
  130 stopped by SIGINT, 143 stopped by SIGTERM: what was obtained is saved"
    };
}

const EXIT_CODES: &str = exit_codes!();

const POLL_HELP: &str = concat!(
    "The carrier token is read from the env var DLR_CARRIER_TOKEN, or from the file given by \
     --carrier-token-file (which wins when both are set). It is never accepted as a flag value: the command line \
     is visible to every user of the host.\n\n",
    exit_codes!()
);

#[derive(Debug, Parser)]
#[command(
    name = "dlr-poller",
    version,
    about = "Tracks whether SMS messages reached the phone: polls the carrier's delivery-status API on a 2-hour \
             grid for 72 hours and keeps an append-only audit trail of every result.",
    after_help = EXIT_CODES
)]
pub struct Cli {
    /// The database holding sms_submissions and the audit trail: a SQLite file, or a PostgreSQL URL
    /// (postgres://user@host:5432/dbname?sslmode=verify-full). Put the password in --db-password-file, not here.
    #[arg(
        long,
        env = "DLR_POLLER_DB",
        default_value = "./dlr-poller.db",
        value_name = "PATH|URL",
        global = true
    )]
    pub db: String,

    /// File holding the PostgreSQL password (trailing newline ignored), so that it stays out of the command line
    /// and the environment. Wins over a password in the URL.
    #[arg(
        long,
        env = "DLR_POLLER_DB_PASSWORD_FILE",
        value_name = "PATH",
        global = true
    )]
    pub db_password_file: Option<PathBuf>,

    /// The dispatcher's table of submissions, when it is not sms_submissions (PostgreSQL; schema.table allowed).
    /// The poller only reads it.
    #[arg(
        long,
        env = "DLR_POLLER_SUBMISSIONS_TABLE",
        default_value = "sms_submissions",
        value_name = "TABLE",
        global = true
    )]
    pub submissions_table: String,

    /// How long a database statement waits for another writer's lock before failing.
    #[arg(
        long,
        env = "DLR_POLLER_BUSY_TIMEOUT",
        default_value = "10s",
        value_name = "DURATION",
        global = true
    )]
    pub busy_timeout: String,

    /// More log output on stderr (-v debug, -vv trace). RUST_LOG overrides both -v and -q.
    #[arg(short, long, action = ArgAction::Count, global = true, conflicts_with = "quiet")]
    pub verbose: u8,

    /// Less log output on stderr: warnings and errors only.
    #[arg(short, long, global = true)]
    pub quiet: bool,

    /// Log lines as text, or as JSON objects (timestamp, level, message, cycle_id) for log pipelines.
    #[arg(
        long,
        env = "DLR_POLLER_LOG_FORMAT",
        value_enum,
        default_value = "text",
        global = true
    )]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create or upgrade the database schema. Idempotent: safe to run on every deploy.
    Migrate,
    /// Run one poll cycle: poll every message that is due, record the results, exit with a status code.
    #[command(after_help = POLL_HELP)]
    Poll(PollArgs),
    /// Check the setup without polling: configuration, database and schema, one authenticated request to the
    /// carrier. Writes nothing; exits with the same codes as `poll`. For CI smoke checks and deploys.
    #[command(after_help = POLL_HELP)]
    Doctor(PollArgs),
    /// Is it working? Exits 0 when the last cycle succeeded and the last successful cycle is younger than
    /// --max-age, else 1 (the last cycle failed), 2 (no success within --max-age) or 3 (cannot tell), with a
    /// one-line reason: the Nagios plugin convention.
    Check {
        /// How old the last successful cycle may be.
        #[arg(long, default_value = "5h", value_name = "DURATION")]
        max_age: String,
        /// The time to judge at, RFC 3339. Default: the system clock.
        #[arg(long, value_name = "RFC3339")]
        now: Option<String>,
    },
    /// Delete audit rows and cycle records older than a cutoff, in small transactions. Nothing is ever deleted
    /// unless asked; results of messages still being tracked are kept.
    Prune {
        /// Age of the oldest rows to keep, e.g. 730d (at least 1d).
        #[arg(long, value_name = "DURATION")]
        older_than: String,
        /// Only count what would be deleted.
        #[arg(long)]
        dry_run: bool,
        /// The time the cutoff is counted from, RFC 3339. Default: the system clock.
        #[arg(long, value_name = "RFC3339")]
        now: Option<String>,
        /// Accept a --now later than the system clock.
        #[arg(long)]
        allow_future_now: bool,
    },
    /// Show a message's tracking state and every poll result, oldest first.
    History {
        /// The message's tracking id, as in sms_submissions.
        tracking_id: String,
        /// Print one JSON object instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// End the tracking of a message by hand: it is closed UNCONFIRMED and never polled again, and the audit
    /// trail gets a closing entry with the reason. For a message the carrier will never answer about.
    Close {
        /// The message's tracking id, as in sms_submissions.
        tracking_id: String,
        /// Why, for the audit trail (e.g. "carrier ticket 4711: message unknown after migration").
        #[arg(long, value_name = "TEXT")]
        reason: String,
    },
    /// Show recent poll cycles with their counts, outcome and success rate.
    Cycles {
        /// How many cycles to show, newest first.
        #[arg(long, default_value = "10")]
        last: String,
        /// Print a JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// For packagers: write the man pages (dlr-poller.1, one per command) and the shell completions (bash,
    /// zsh, fish), generated from these definitions, into a directory.
    #[command(hide = true)]
    Generate {
        /// Where to write them (created when missing).
        #[arg(value_name = "DIR")]
        out_dir: PathBuf,
    },
}

#[derive(Debug, Args)]
pub struct PollArgs {
    /// The carrier's API: generic (the generic delivery-status API), twilio, vonage, sinch, infobip or telnyx.
    #[arg(
        long,
        env = "DLR_CARRIER",
        default_value = "generic",
        value_name = "NAME"
    )]
    pub carrier: String,

    /// The carrier's server URL, e.g. https://carrier.example/v1; the profile appends its paths. Default: the
    /// provider's public host (Twilio https://api.twilio.com, Vonage https://api.nexmo.com, Sinch
    /// https://us.sms.api.sinch.com, Telnyx https://api.telnyx.com/v2). Required for generic and Infobip.
    #[arg(long, env = "DLR_CARRIER_URL", value_name = "URL")]
    pub carrier_url: Option<String>,

    /// The non-secret account identity the carrier's API needs: the Twilio Account SID, the Vonage API key, the
    /// Sinch service plan id.
    #[arg(long, env = "DLR_CARRIER_ACCOUNT", value_name = "ID")]
    pub carrier_account: Option<String>,

    /// A file of status words and failure codes that add to or override the carrier's built-in table, under
    /// [provider] headers (see the README).
    #[arg(long, env = "DLR_POLLER_STATUS_MAP", value_name = "FILE")]
    pub status_map: Option<PathBuf>,

    /// File holding the carrier token (surrounding whitespace is ignored). Without it, env DLR_CARRIER_TOKEN.
    #[arg(long, env = "DLR_CARRIER_TOKEN_FILE", value_name = "PATH")]
    pub carrier_token_file: Option<PathBuf>,

    /// Worker threads querying the carrier at once (1-256).
    #[arg(
        long,
        env = "DLR_POLLER_CONCURRENCY",
        default_value = "8",
        value_name = "N"
    )]
    pub concurrency: String,

    /// Cycle budget, e.g. 14m, 90s, 1h30m. At the deadline no new request starts, what was obtained is saved and
    /// the run exits 75; the rest stays due.
    #[arg(
        long,
        env = "DLR_POLLER_DEADLINE",
        default_value = "14m",
        value_name = "DURATION"
    )]
    pub deadline: String,

    /// Timeout of one HTTP request, connection included (never beyond the deadline).
    #[arg(
        long,
        env = "DLR_POLLER_REQUEST_TIMEOUT",
        default_value = "30s",
        value_name = "DURATION"
    )]
    pub request_timeout: String,

    /// Attempts per request before a batch counts as failed (transient errors, 429 and 5xx are retried with
    /// exponential backoff and full jitter; Retry-After is honoured).
    #[arg(
        long,
        env = "DLR_POLLER_MAX_ATTEMPTS",
        default_value = "4",
        value_name = "N"
    )]
    pub max_attempts: String,

    /// Cap on requests per second to the carrier, across all workers. Default: no cap.
    #[arg(long, env = "DLR_POLLER_MAX_RPS", value_name = "N")]
    pub max_rps: Option<String>,

    /// The cycle's clock, RFC 3339 (e.g. 2025-12-01T11:00:00Z): replays a missed cycle or drives tests.
    /// Default: the system clock. Refused when later than the system clock (by more than 5 minutes) unless
    /// --allow-future-now is given.
    #[arg(long, value_name = "RFC3339")]
    pub now: Option<String>,

    /// Accept a --now later than the system clock. Such a cycle polls and closes messages ahead of their time:
    /// every open message whose last slot is before that clock is closed for good.
    #[arg(long)]
    pub allow_future_now: bool,

    /// How long past its 72-hour window a submission the poller first sees is still polled, once: a first run
    /// on a database with history, or a run after an outage. Older ones are recorded as too old to track, with
    /// no carrier request. Raise it to backfill older messages.
    #[arg(
        long,
        env = "DLR_POLLER_CATCH_UP",
        default_value = "24h",
        value_name = "DURATION"
    )]
    pub catch_up: String,

    /// Allow an http:// carrier URL on a host other than loopback (the token would travel in clear).
    #[arg(long)]
    pub allow_insecure_http: bool,

    /// Print the cycle summary as one JSON object on stdout.
    #[arg(long)]
    pub json: bool,

    /// After the cycle, write Prometheus metrics to this file (node_exporter textfile format), atomically.
    #[arg(long, env = "DLR_POLLER_METRICS_FILE", value_name = "PATH")]
    pub metrics_file: Option<PathBuf>,

    /// After the cycle, push the same metrics to this Prometheus Pushgateway (job "dlr_poller", grouped by
    /// --replica). A failed push is a warning, not a failed cycle.
    #[arg(long, env = "DLR_POLLER_PUSHGATEWAY", value_name = "URL")]
    pub pushgateway: Option<String>,

    /// This run's name among replicas, the `replica` label of its pushed metrics, so that the pushes of several
    /// replicas do not overwrite each other (letters, digits, `.`, `_`, `-`). Default: the host name.
    #[arg(long, env = "DLR_POLLER_REPLICA", value_name = "NAME")]
    pub replica: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("dlr-poller").chain(args.iter().copied()))
    }

    #[test]
    fn poll_defaults() {
        let cli = parse(&["poll", "--carrier-url", "http://127.0.0.1:1"]).unwrap();
        let Command::Poll(args) = cli.command else {
            panic!("not poll")
        };
        assert_eq!(args.concurrency, "8");
        assert_eq!(args.deadline, "14m");
        assert!(!args.json);
        assert_eq!(args.now, None);
    }

    #[test]
    fn global_flags_go_anywhere() {
        let cli = parse(&["poll", "--db", "x.db", "-vv"]).unwrap();
        assert_eq!(cli.db, PathBuf::from("x.db"));
        assert_eq!(cli.verbose, 2);
    }

    #[test]
    fn there_is_no_token_flag() {
        assert!(parse(&["poll", "--carrier-token", "abc"]).is_err());
    }

    #[test]
    fn verbose_and_quiet_conflict() {
        assert!(parse(&["-v", "-q", "migrate"]).is_err());
    }

    #[test]
    fn history_needs_a_tracking_id() {
        assert!(parse(&["history"]).is_err());
        let cli = parse(&["history", "T1"]).unwrap();
        assert!(
            matches!(cli.command, Command::History { tracking_id, json: false } if tracking_id == "T1")
        );
    }
}
