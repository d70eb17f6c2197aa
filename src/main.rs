//! The `dlr-poller` command: parse, set up logging, run one command, turn the outcome into an exit code.

use std::process::ExitCode;

use anyhow::Result;
use clap::Parser;

use dlr_poller::cli::{Cli, Command, LogFormat};
use dlr_poller::commands::{self, Db};
use dlr_poller::exit::{Exit, ExitContext, exit_of};
use dlr_poller::{config, logging, store};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                Exit::Usage.into()
            } else {
                Exit::Ok.into()
            };
        }
    };
    logging::init(cli.log_format, cli.quiet, cli.verbose);
    let db = cli.db.clone();
    let json_logs = cli.log_format == LogFormat::Json;
    match run(cli) {
        Ok(exit) => exit.into(),
        Err(err) => {
            // A log pipeline reads stderr as JSON lines: the error goes there as one too.
            if json_logs {
                log::error!("{err:#}");
            } else {
                eprintln!("dlr-poller: error: {err:#}");
            }
            let hint = if store::is_busy(&err) {
                Some(
                    "another process held a lock on the database for longer than --busy-timeout"
                        .to_string(),
                )
            } else if store::is_read_only(&err) {
                Some(format!(
                    "{} (and its directory, where SQLite keeps the -wal and -shm files) must be writable by this user",
                    db.display()
                ))
            } else {
                None
            };
            match (hint, json_logs) {
                (Some(hint), true) => log::warn!("hint: {hint}"),
                (Some(hint), false) => eprintln!("dlr-poller: hint: {hint}"),
                (None, _) => {}
            }
            exit_of(&err).into()
        }
    }
}

fn run(cli: Cli) -> Result<Exit> {
    let db = Db {
        busy_timeout: config::busy_timeout(&cli.busy_timeout).exit_code(Exit::Config)?,
        path: cli.db,
    };
    match cli.command {
        Command::Migrate => commands::migrate(&db),
        Command::Poll(args) => commands::poll(&db, &args),
        Command::Doctor(args) => commands::doctor(&db, &args),
        Command::Check { max_age, now } => commands::check(&db, &max_age, now.as_deref()),
        Command::Prune {
            older_than,
            dry_run,
            now,
        } => commands::prune(&db, &older_than, dry_run, now.as_deref()),
        Command::History { tracking_id, json } => commands::history(&db, &tracking_id, json),
        Command::Cycles { last, json } => commands::cycles(&db, &last, json),
    }
}
