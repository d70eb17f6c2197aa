//! The `dlr-poller` command: parse, set up logging, run one command, turn the outcome into an exit code.

use std::process::ExitCode;

use clap::Parser;

use dlr_poller::cli::Cli;
use dlr_poller::commands::{self, Db};
use dlr_poller::exit::{Exit, exit_of};
use dlr_poller::logging::LogFormat;
use dlr_poller::redact::error_text;
use dlr_poller::{logging, output, store};

fn main() -> ExitCode {
    limit_malloc_arenas();
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
    let db = Db::resolve(&cli);
    let hint_target = db.as_ref().ok().map(|db| db.target.clone());
    match commands::run(cli.command, db) {
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

/// glibc gives threads that allocate at once arenas of their own (up to eight per core), and memory freed in
/// one arena stays resident while the others are busy: with a pool of workers parsing carrier answers, that
/// kept tens of megabytes resident that the heap no longer used (a Twilio cycle of 300,000 messages peaked at
/// 205 MB, and at 161 MB with two arenas; BENCHMARKS.md). Two arenas are plenty: the workers' allocations are
/// short-lived, and the database's page cache is the large one. `MALLOC_ARENA_MAX` or `GLIBC_TUNABLES` in the
/// environment is left to decide.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn limit_malloc_arenas() {
    /// `M_ARENA_MAX` in glibc's `malloc.h`.
    const M_ARENA_MAX: std::ffi::c_int = -8;
    unsafe extern "C" {
        fn mallopt(param: std::ffi::c_int, value: std::ffi::c_int) -> std::ffi::c_int;
    }
    // An operator's own setting stands.
    if std::env::var_os("MALLOC_ARENA_MAX").is_some()
        || std::env::var_os("GLIBC_TUNABLES").is_some()
    {
        return;
    }
    // SAFETY: mallopt only sets a tunable of glibc's allocator, and no other thread exists yet.
    unsafe {
        mallopt(M_ARENA_MAX, 2);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn limit_malloc_arenas() {}
