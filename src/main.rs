//! The `dlr-poller` command: parse, set up logging, run one command, turn the outcome into an exit code.

use std::process::ExitCode;

use anyhow::Result;
use clap::Parser;

use dlr_poller::cli::{Cli, Command, LogFormat};
use dlr_poller::commands::{self, Db};
use dlr_poller::exit::{Exit, ExitContext, exit_of};
use dlr_poller::redact::error_text;
use dlr_poller::store::Target;
use dlr_poller::{config, logging, output, store};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if !e.use_stderr() {
                Exit::Ok.into()
            } else if is_check(std::env::args().skip(1)) {
                // `check` speaks the Nagios convention only: its own problems are UNKNOWN.
                Exit::Unknown.into()
            } else {
                Exit::Usage.into()
            };
        }
    };
    logging::init(cli.log_format, cli.quiet, cli.verbose);
    let json_logs = cli.log_format == LogFormat::Json;
    let target = target(&cli);
    let hint_target = target.as_ref().ok().cloned();
    match run(cli, target) {
        Ok(exit) => exit.into(),
        Err(err) => {
            // A log pipeline reads stderr as JSON lines: the error goes there as one too.
            // A database's error may quote the row it failed on: numbers masked.
            let message = error_text(&err);
            if json_logs {
                log::error!("{message}");
            } else {
                output::error_line(&format!("dlr-poller: error: {message}"));
            }
            match (hint_target.and_then(|t| store::hint(&err, &t)), json_logs) {
                (Some(hint), true) => log::warn!("hint: {hint}"),
                (Some(hint), false) => output::error_line(&format!("dlr-poller: hint: {hint}")),
                (None, _) => {}
            }
            exit_of(&err).into()
        }
    }
}

/// The database `--db` and `--db-password-file` name. A bad value is a configuration error (78).
fn target(cli: &Cli) -> Result<Target> {
    let password = match &cli.db_password_file {
        Some(path) => Some(config::secret_file(
            path,
            "--db-password-file / DLR_POLLER_DB_PASSWORD_FILE",
        )?),
        None => None,
    };
    Target::parse(&cli.db, password, &cli.submissions_table).exit_code(Exit::Config)
}

/// Whether the command line asks for `check`: its first word that is not a global flag or a global flag's value.
fn is_check(args: impl Iterator<Item = String>) -> bool {
    let mut args = args;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--db"
            | "--db-password-file"
            | "--submissions-table"
            | "--busy-timeout"
            | "--log-format" => {
                args.next();
            }
            a if a.starts_with('-') => {}
            a => return a == "check",
        }
    }
    false
}

fn run(cli: Cli, target: Result<Target>) -> Result<Exit> {
    let busy_timeout = config::busy_timeout(&cli.busy_timeout).exit_code(Exit::Config);
    let db = |busy_timeout| -> Result<Db> {
        Ok(Db {
            busy_timeout,
            target: target
                .as_ref()
                .map_err(|e| anyhow::anyhow!("{e:#}"))
                .exit_code(Exit::Config)?
                .clone(),
        })
    };
    match cli.command {
        Command::Check { max_age, now } => Ok(busy_timeout
            .and_then(db)
            .and_then(|db| commands::check(&db, &max_age, now.as_deref()))
            .unwrap_or_else(|e| commands::unknown(&e))),
        Command::Migrate => commands::migrate(&db(busy_timeout?)?),
        Command::Poll(args) => commands::poll(&db(busy_timeout?)?, &args),
        Command::Doctor(args) => commands::doctor(&db(busy_timeout?)?, &args),
        Command::Prune {
            older_than,
            dry_run,
            now,
            allow_future_now,
        } => commands::prune(
            &db(busy_timeout?)?,
            &older_than,
            dry_run,
            now.as_deref(),
            allow_future_now,
        ),
        Command::Close {
            tracking_id,
            reason,
        } => commands::close(&db(busy_timeout?)?, &tracking_id, &reason),
        Command::History { tracking_id, json } => {
            commands::history(&db(busy_timeout?)?, &tracking_id, json)
        }
        Command::Cycles { last, json } => commands::cycles(&db(busy_timeout?)?, &last, json),
        Command::Generate { out_dir } => commands::generate(&out_dir),
    }
}
