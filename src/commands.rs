//! One function per subcommand: each resolves what it needs, calls into the modules that do the work, prints its
//! result on stdout and returns the exit code. `main` parses, sets up logging and reports the outcome; [`run`]
//! dispatches.

use std::time::Duration;

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};

use crate::carrier::FetchError;
use crate::carrier::http::Stats;
use crate::cli::{Cli, Command, PollArgs};
use crate::config::{self, PollConfig, TOKEN_ENV};
use crate::control::Control;
use crate::exit::{Exit, ExitContext};
use crate::redact::{error_text, mask_owned, mask_phone, mask_text};
use crate::store::{self, Backend, Closed, Target};
use crate::summary::Summary;
use crate::{cycle, metrics, output, report, schedule, signals, timefmt};

/// What every command shares: the database and how long to wait for its locks.
pub struct Db {
    pub target: Target,
    pub busy_timeout: Duration,
}

impl Db {
    /// The database `--db` and `--db-password-file` name, and `--busy-timeout`. A bad value is a configuration
    /// error (78).
    pub fn resolve(cli: &Cli) -> Result<Db> {
        let busy_timeout = config::busy_timeout(&cli.busy_timeout).exit_code(Exit::Config)?;
        let password = match &cli.db_password_file {
            Some(path) => Some(config::secret_file(
                path,
                "--db-password-file / DLR_POLLER_DB_PASSWORD_FILE",
            )?),
            None => None,
        };
        let target =
            Target::parse(&cli.db, password, &cli.submissions_table).exit_code(Exit::Config)?;
        Ok(Db {
            target,
            busy_timeout,
        })
    }

    fn open(&self, create: bool) -> Result<Box<dyn Backend>> {
        store::open(&self.target, create, self.busy_timeout)
    }

    /// Opens an existing database whose schema is current.
    fn open_checked(&self) -> Result<Box<dyn Backend>> {
        let mut store = self.open(false)?;
        store.check_schema()?;
        Ok(store)
    }
}

/// Runs one command on the database `db` names (a command that needs none runs whatever `db` is).
pub fn run(command: Command, db: Result<Db>) -> Result<Exit> {
    match command {
        // `check` speaks the Nagios convention only: its own problems are UNKNOWN.
        Command::Check { max_age, now } => Ok(db
            .and_then(|db| check(&db, &max_age, now.as_deref()))
            .unwrap_or_else(|e| unknown(&e))),
        Command::Migrate => migrate(&db?),
        Command::Poll(args) => poll(&db?, &args),
        Command::Doctor(args) => doctor(&db?, &args),
        Command::Prune {
            older_than,
            dry_run,
            now,
            allow_future_now,
        } => prune(&db?, &older_than, dry_run, now.as_deref(), allow_future_now),
        Command::Close {
            tracking_id,
            reason,
        } => close(&db?, &tracking_id, &reason),
        Command::History { tracking_id, json } => history(&db?, &tracking_id, json),
        Command::Cycles { last, json } => cycles(&db?, &last, json),
        Command::Generate { out_dir } => generate(&out_dir),
    }
}

/// The time a command judges by: `--now` when given, else the system clock. A bad value is a configuration
/// error (78), as in every command.
fn clock(now: Option<&str>, allow_future: bool) -> Result<DateTime<Utc>> {
    match now {
        Some(raw) => config::clock(raw, allow_future, Utc::now()).exit_code(Exit::Config),
        None => Ok(Utc::now()),
    }
}

pub fn migrate(db: &Db) -> Result<Exit> {
    let (from, to) = db.open(true)?.migrate()?;
    if from == to {
        log::info!("schema of {} is up to date (version {to})", db.target);
    } else {
        log::info!("migrated {} from schema version {from} to {to}", db.target);
    }
    Ok(Exit::Ok)
}

fn resolve(args: &PollArgs) -> Result<PollConfig> {
    let config =
        PollConfig::resolve(args, std::env::var(TOKEN_ENV).ok()).exit_code(Exit::Config)?;
    log::debug!("configuration: {config:?}");
    Ok(config)
}

/// Runs one cycle. The process exits with the code the cycle recorded: metrics that cannot be written or pushed
/// afterwards are a warning, never another outcome.
pub fn poll(db: &Db, args: &PollArgs) -> Result<Exit> {
    let config = resolve(args)?;
    metrics::replica(args.replica.as_deref()).exit_code(Exit::Config)?;
    let signal = signals::install()?;
    let (summary, exit) = cycle::run(&db.target, &config, db.busy_timeout, signal)?;
    log::info!("{}", summary.line());
    // The cycle is recorded: whatever becomes of its output, the exit code is its outcome's and the metrics are
    // exported.
    if config.json
        && let Err(e) = serde_json::to_string(&summary)
            .context("encoding the summary")
            .and_then(|json| output::line(&json))
    {
        log::warn!("{e:#}; the cycle itself is unaffected");
    }
    if (args.metrics_file.is_some() || args.pushgateway.is_some())
        && let Err(e) = export_metrics(db, args, &config, &summary)
    {
        log::warn!("{e:#}; the cycle itself is unaffected");
    }
    Ok(exit)
}

fn export_metrics(
    db: &Db,
    args: &PollArgs,
    config: &PollConfig,
    summary: &crate::summary::Summary,
) -> Result<()> {
    let now = timefmt::parse(&summary.cycle_now)?;
    let data = db.open(false)?.metrics_data(now)?;
    let text = metrics::render(summary, config.deadline, &data);
    let written = match &args.metrics_file {
        Some(path) => metrics::write_file(path, &text),
        None => Ok(()),
    };
    if let Some(gateway) = &args.pushgateway
        && let Err(e) = metrics::replica(args.replica.as_deref())
            .and_then(|replica| metrics::push(gateway, &replica, &text))
    {
        log::warn!("{e:#}; the cycle itself is unaffected");
    }
    written
}

/// Validates the configuration, the database and the credentials without polling or writing anything.
pub fn doctor(db: &Db, args: &PollArgs) -> Result<Exit> {
    let config = resolve(args)?;
    output::line(&format!(
        "ok: configuration (carrier {} at {}, concurrency {}, deadline {})",
        config.carrier.provider.name,
        config.carrier_url,
        config.concurrency,
        timefmt::humanize(config.deadline)
    ))?;
    let mut store = db.open_checked()?;
    let (submissions, open, cycles) = store.counts()?;
    output::line(&format!(
        "ok: database {} (schema current; {submissions} submissions, {open} messages being tracked, {cycles} cycles)",
        db.target
    ))?;
    let control = std::sync::Arc::new(Control::new(config.request_timeout, signals::install()?));
    let carrier = config.carrier.connect(
        &config.http(),
        control,
        std::sync::Arc::new(Stats::default()),
    );
    let started = std::time::Instant::now();
    match carrier.probe() {
        Ok(_) => {
            output::line(&format!(
                "ok: carrier answered an authenticated request in {} ms",
                started.elapsed().as_millis()
            ))?;
            Ok(Exit::Ok)
        }
        Err(e @ FetchError::CredentialsRejected { .. }) => {
            output::line(&format!("failed: {e}"))?;
            Ok(Exit::CredentialsRejected)
        }
        Err(e) => {
            output::line(&format!("failed: carrier: {e}"))?;
            Ok(Exit::CarrierUnavailable)
        }
    }
}

/// Nagios-style health check on the cycles recorded in the database. It exits only 0-3: any problem of its
/// own (a bad flag, a database it cannot read) is UNKNOWN (3), with the reason on stdout.
pub fn check(db: &Db, max_age: &str, now: Option<&str>) -> Result<Exit> {
    let verdict = (|| {
        let max_age = config::bounded_duration(
            max_age,
            "--max-age",
            Duration::from_secs(60),
            Duration::from_secs(30 * 86400),
        )?;
        let now = match now {
            Some(raw) => timefmt::parse(raw).context("invalid --now")?,
            None => Utc::now(),
        };
        let mut store = db.open_checked()?;
        anyhow::Ok((
            max_age,
            now,
            store.last_finished_cycle()?,
            store.metrics_data(now)?,
        ))
    })();
    let (max_age, now, last, data) = match verdict {
        Ok(v) => v,
        Err(e) => return Ok(unknown(&e)),
    };
    let age = data
        .last_success
        .map(|at| (now - at).to_std().unwrap_or_default());
    let success = match (data.last_success, age) {
        (Some(at), Some(age)) => format!(
            "last success {} ago ({})",
            timefmt::humanize_rounded(age),
            timefmt::format(at)
        ),
        _ => "no successful cycle yet".to_string(),
    };
    let (exit, line) = match (&last, age) {
        (None, _) => (Exit::Critical, "CRITICAL: no cycle has run yet".to_string()),
        (_, None) => (Exit::Critical, format!("CRITICAL: {success}")),
        (_, Some(age)) if age > max_age => (
            Exit::Critical,
            format!(
                "CRITICAL: no successful cycle within {}: {success}",
                timefmt::humanize(max_age)
            ),
        ),
        (Some(c), _) if c.exit_code != Some(0) => (
            Exit::Warning,
            format!(
                "WARNING: last cycle {} ended {} (exit {}){}; {success}",
                c.cycle_id,
                c.outcome,
                c.exit_code.map_or("-".into(), |e| e.to_string()),
                c.error
                    .as_deref()
                    .map(|e| format!(": {}", mask_text(e)))
                    .unwrap_or_default()
            ),
        ),
        (Some(c), _) if c.lag_seconds > schedule::INTERVAL.num_seconds() as u64 => (
            Exit::Warning,
            format!(
                "WARNING: behind the polling grid: last cycle {} ok; {success}",
                c.cycle_id
            ),
        ),
        (Some(c), _) => (
            Exit::Ok,
            format!(
                "OK: last cycle {} ok, {} messages polled; {success}",
                c.cycle_id, c.polled
            ),
        ),
    };
    // How far behind its grid the last cycle left the poller, whatever the verdict.
    let line = match &last {
        Some(c) if c.overdue > 0 => format!("{line}; it left {}", overdue(c)),
        _ => line,
    };
    // The verdict is the exit code: it stands whether or not anyone reads the line.
    output::say(&line);
    Ok(exit)
}

/// What a cycle left due, for `check`: "N messages due, the oldest due for 2h 10m".
fn overdue(c: &Summary) -> String {
    format!(
        "{} messages due, the oldest due for {}",
        c.overdue,
        timefmt::humanize_rounded(Duration::from_secs(c.lag_seconds))
    )
}

/// `check`'s answer when it cannot tell: UNKNOWN and the reason, exit 3.
pub fn unknown(e: &anyhow::Error) -> Exit {
    output::say(&format!("UNKNOWN: {}", error_text(e)));
    Exit::Unknown
}

pub fn prune(
    db: &Db,
    older_than: &str,
    dry_run: bool,
    now: Option<&str>,
    allow_future_now: bool,
) -> Result<Exit> {
    let age = config::bounded_duration(
        older_than,
        "--older-than",
        Duration::from_secs(86400),
        Duration::from_secs(100 * 365 * 86400),
    )
    .exit_code(Exit::Config)?;
    let now = clock(now, allow_future_now)?;
    let cutoff = now
        - chrono::TimeDelta::from_std(age)
            .context("--older-than is too large")
            .exit_code(Exit::Config)?;
    let mut store = db.open_checked()?;
    let (audit, cycles) = store.prune(cutoff, dry_run, 5_000)?;
    let verb = if dry_run { "would delete" } else { "deleted" };
    output::say(&format!(
        "{verb} {audit} audit rows polled before {} and {cycles} cycle records started before it",
        timefmt::format(cutoff)
    ));
    Ok(Exit::Ok)
}

pub fn history(db: &Db, tracking_id: &str, json: bool) -> Result<Exit> {
    let mut history = db
        .open_checked()?
        .history(tracking_id)?
        .with_context(|| format!("no message with tracking id {tracking_id:?} in sms_submissions"))
        .exit_code(Exit::Usage)?;
    // The number is masked here as in the logs: `history` is for people looking into a message, not for
    // exporting personal data.
    history.phone_number = history.phone_number.as_deref().map(mask_phone);
    // Text stored by an earlier version, which did not mask carrier text, is masked as it is shown.
    mask_stored(&mut history.note);
    for row in &mut history.results {
        mask_stored(&mut row.carrier_status);
        mask_stored(&mut row.failure_code);
        mask_stored(&mut row.failure_reason);
    }
    if json {
        output::line(&serde_json::to_string_pretty(&history)?)?;
    } else {
        output::print(&report::history_text(&history))?;
    }
    Ok(Exit::Ok)
}

/// Masks text read back from the database: rows an earlier version wrote may hold carrier text unmasked.
fn mask_stored(text: &mut Option<String>) {
    *text = text.take().map(mask_owned);
}

pub fn cycles(db: &Db, last: &str, json: bool) -> Result<Exit> {
    let last: u64 = last
        .parse()
        .ok()
        .filter(|n| *n > 0)
        .with_context(|| format!("invalid --last {last:?}: expected a whole number above 0"))
        .exit_code(Exit::Config)?;
    let mut cycles = db.open_checked()?.cycles(last)?;
    // An error stored by an earlier version, which did not mask carrier text, is masked as it is shown.
    for cycle in &mut cycles {
        mask_stored(&mut cycle.error);
    }
    if json {
        output::line(&serde_json::to_string_pretty(&cycles)?)?;
    } else {
        output::print(&report::cycles_text(&cycles))?;
    }
    Ok(Exit::Ok)
}

/// Ends the tracking of one message by hand (UNCONFIRMED, with the reason in the audit trail).
pub fn close(db: &Db, tracking_id: &str, reason: &str) -> Result<Exit> {
    let reason = reason.trim();
    if reason.is_empty() {
        return Err(anyhow::anyhow!(
            "--reason is empty: say why the message is closed, for the audit trail"
        ))
        .exit_code(Exit::Config);
    }
    let now = Utc::now();
    match db.open_checked()?.close(tracking_id, reason, now)? {
        Closed::Now => {
            output::say(&format!(
                "closed {tracking_id}: UNCONFIRMED at {}, reason: {reason}",
                timefmt::format(now)
            ));
            Ok(Exit::Ok)
        }
        Closed::Ended(state) => {
            output::say(&format!(
                "{tracking_id} is not being tracked any more ({state}); nothing changed"
            ));
            Ok(Exit::Ok)
        }
        Closed::Unknown => Err(anyhow::anyhow!(
            "no message with tracking id {tracking_id:?} in sms_submissions"
        ))
        .exit_code(Exit::Usage),
    }
}

/// Writes the man pages and the shell completions, generated from the command line's definitions, into
/// `out_dir`, and names each file written on stdout.
pub fn generate(out_dir: &std::path::Path) -> Result<Exit> {
    use clap::CommandFactory;
    use clap_complete::Shell;

    std::fs::create_dir_all(out_dir)
        .with_context(|| format!("creating {}", out_dir.display()))
        .exit_code(Exit::Config)?;
    let writing = || format!("writing into {}", out_dir.display());
    let mut command = crate::cli::Cli::command();
    let mut written = Vec::new();
    // One page for the whole tool and one per command, as `man dlr-poller-poll` finds them (none for the hidden
    // `generate`).
    clap_mangen::generate_to(command.clone(), out_dir)
        .with_context(writing)
        .exit_code(Exit::Config)?;
    for entry in std::fs::read_dir(out_dir).with_context(writing)? {
        let name = entry.with_context(writing)?.file_name();
        if name.to_string_lossy().ends_with(".1") {
            written.push(out_dir.join(name));
        }
    }
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        let path = clap_complete::generate_to(shell, &mut command, "dlr-poller", out_dir)
            .with_context(writing)
            .exit_code(Exit::Config)?;
        written.push(path);
    }
    written.sort();
    for path in written {
        output::line(&path.display().to_string())?;
    }
    Ok(Exit::Ok)
}
