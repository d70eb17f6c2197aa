//! The `dlr-poller` command: parse, resolve, run one command, turn the outcome into an exit code.

use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Parser;

use dlr_poller::cli::{Cli, Command};
use dlr_poller::config::{self, PollConfig, TOKEN_ENV};
use dlr_poller::exit::{Exit, ExitContext, exit_of};
use dlr_poller::store::{self, Store};
use dlr_poller::{cycle, report, signals};

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
    init_logging(&cli);
    let db = cli.db.clone();
    match run(cli) {
        Ok(exit) => exit.into(),
        Err(err) => {
            eprintln!("dlr-poller: error: {err:#}");
            if store::is_busy(&err) {
                eprintln!(
                    "dlr-poller: hint: another process held a lock on the database for longer than --busy-timeout"
                );
            } else if store::is_read_only(&err) {
                eprintln!(
                    "dlr-poller: hint: {} (and its directory, where SQLite keeps the -wal and -shm files) must be \
                     writable by this user",
                    db.display()
                );
            }
            exit_of(&err).into()
        }
    }
}

fn init_logging(cli: &Cli) {
    let level = match (cli.quiet, cli.verbose) {
        (true, _) => "warn",
        (false, 0) => "info",
        (false, 1) => "debug",
        (false, _) => "trace",
    };
    env_logger::Builder::from_env(
        env_logger::Env::default().default_filter_or(format!("warn,dlr_poller={level}")),
    )
    .format_target(false)
    .init();
}

fn run(cli: Cli) -> Result<Exit> {
    let busy_timeout = config::busy_timeout(&cli.busy_timeout).exit_code(Exit::Config)?;
    match cli.command {
        Command::Migrate => {
            let mut store = Store::open(&cli.db, true, busy_timeout)?;
            let (from, to) = store.migrate()?;
            if from == to {
                log::info!(
                    "schema of {} is up to date (version {to})",
                    cli.db.display()
                );
            } else {
                log::info!(
                    "migrated {} from schema version {from} to {to}",
                    cli.db.display()
                );
            }
            Ok(Exit::Ok)
        }
        Command::Poll(args) => {
            let config = PollConfig::resolve(&args, std::env::var(TOKEN_ENV).ok())
                .exit_code(Exit::Config)?;
            log::debug!("configuration: {config:?}");
            let signal = signals::install()?;
            let (summary, exit) = cycle::run(&cli.db, &config, busy_timeout, signal)?;
            log::info!("{}", summary.line());
            if config.json {
                println!(
                    "{}",
                    serde_json::to_string(&summary).context("encoding the summary")?
                );
            }
            Ok(exit)
        }
        Command::History { tracking_id, json } => {
            let store = Store::open(&cli.db, false, busy_timeout)?;
            store.check_schema()?;
            let history = store
                .history(&tracking_id)?
                .with_context(|| {
                    format!("no message with tracking id {tracking_id:?} in sms_submissions")
                })
                .exit_code(Exit::Usage)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&history)?);
            } else {
                print!("{}", report::history_text(&history));
            }
            Ok(Exit::Ok)
        }
        Command::Cycles { last, json } => {
            let last: u64 = last
                .parse()
                .ok()
                .filter(|n| *n > 0)
                .with_context(|| {
                    format!("invalid --last {last:?}: expected a whole number above 0")
                })
                .exit_code(Exit::Usage)?;
            let store = Store::open(&cli.db, false, busy_timeout)?;
            store.check_schema()?;
            let cycles = store.cycles(last)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&cycles)?);
            } else {
                print!("{}", report::cycles_text(&cycles));
            }
            Ok(Exit::Ok)
        }
    }
}
