//! The process exit codes: the contract between a cycle and its scheduler.
//!
//! The values follow BSD `sysexits.h` so that cron wrappers and monitoring that already know that table read them
//! right. The README carries the same table; change both together, and never renumber a released code.

use std::process::ExitCode;

/// How a run ended, as the scheduler sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// Every due message was polled (or nothing was due).
    Ok,
    /// Bad command line: unknown flag, missing argument (sysexits EX_USAGE).
    Usage,
    /// The carrier could not be reached or kept failing: nothing could be polled (EX_UNAVAILABLE).
    CarrierUnavailable,
    /// The database could not be opened, read or written, or its schema is missing (EX_IOERR).
    Database,
    /// Some messages were polled and some were not (failed batches or the deadline); they stay due and the next run
    /// picks them up first (EX_TEMPFAIL).
    Partial,
    /// The carrier rejected the credentials (401/403); the cycle stopped at once (EX_NOPERM).
    CredentialsRejected,
    /// Missing or invalid configuration: carrier URL, token, a flag or env value (EX_CONFIG).
    Config,
    /// Another cycle holds the lease on this database; this run did nothing (EX_CANTCREAT: cannot take the lock).
    Locked,
    /// SIGTERM or SIGINT stopped the cycle; what was obtained is saved (128 + the signal's number: 143, 130).
    Interrupted(i32),
    /// `check` only (Nagios convention): the last cycle did not succeed, but a success is recent enough.
    Warning,
    /// `check` only: no successful cycle within --max-age.
    Critical,
    /// `check` only: the state cannot be read.
    Unknown,
}

impl Exit {
    pub const fn code(self) -> u8 {
        match self {
            Exit::Ok => 0,
            Exit::Usage => 64,
            Exit::CarrierUnavailable => 69,
            Exit::Database => 74,
            Exit::Partial => 75,
            Exit::CredentialsRejected => 77,
            Exit::Config => 78,
            Exit::Locked => 73,
            Exit::Interrupted(signal) => (128 + signal) as u8,
            Exit::Warning => 1,
            Exit::Critical => 2,
            Exit::Unknown => 3,
        }
    }

    /// The word recorded in the cycles table and shown by `dlr-poller cycles`.
    pub const fn outcome(self) -> &'static str {
        match self {
            Exit::Ok => "ok",
            Exit::Usage => "usage",
            Exit::CarrierUnavailable => "carrier_unavailable",
            Exit::Database => "database_error",
            Exit::Partial => "partial",
            Exit::CredentialsRejected => "credentials_rejected",
            Exit::Config => "config_error",
            Exit::Locked => "locked",
            Exit::Interrupted(_) => "interrupted",
            Exit::Warning => "warning",
            Exit::Critical => "critical",
            Exit::Unknown => "unknown",
        }
    }
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> ExitCode {
        ExitCode::from(exit.code())
    }
}

/// An error that carries the exit code it must end the process with. Errors without one are classified by
/// `main` (database errors are tagged where the database is touched).
#[derive(Debug)]
pub struct Failure {
    pub exit: Exit,
    pub error: anyhow::Error,
}

// The failure is transparent: it shows the wrapped error's message and hands on its causes, so the error chain
// reads as if the tag were not there.
impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.error)
    }
}

impl std::error::Error for Failure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.error.source()
    }
}

/// Tags an error with the exit code it must produce.
pub trait ExitContext<T> {
    fn exit_code(self, exit: Exit) -> Result<T, anyhow::Error>;
}

impl<T, E: Into<anyhow::Error>> ExitContext<T> for Result<T, E> {
    fn exit_code(self, exit: Exit) -> Result<T, anyhow::Error> {
        self.map_err(|e| {
            anyhow::Error::new(Failure {
                exit,
                error: e.into(),
            })
        })
    }
}

/// The exit code an error asks for; untagged errors are internal failures of the run, reported as database
/// errors only when they are tagged so, otherwise as configuration errors.
pub fn exit_of(err: &anyhow::Error) -> Exit {
    tagged(err).unwrap_or(Exit::Config)
}

/// The exit code an error was tagged with, if any.
pub fn tagged(err: &anyhow::Error) -> Option<Exit> {
    err.chain()
        .find_map(|e| e.downcast_ref::<Failure>().map(|f| f.exit))
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::anyhow;

    #[test]
    fn codes_follow_sysexits() {
        let table = [
            (Exit::Ok, 0),
            (Exit::Usage, 64),
            (Exit::CarrierUnavailable, 69),
            (Exit::Database, 74),
            (Exit::Partial, 75),
            (Exit::CredentialsRejected, 77),
            (Exit::Config, 78),
            (Exit::Locked, 73),
            (Exit::Interrupted(15), 143),
            (Exit::Interrupted(2), 130),
            (Exit::Warning, 1),
            (Exit::Critical, 2),
            (Exit::Unknown, 3),
        ];
        for (exit, code) in table {
            assert_eq!(exit.code(), code, "{exit:?}");
        }
    }

    #[test]
    fn tagged_errors_keep_their_code_through_context() {
        let err: anyhow::Error = Err::<(), _>(anyhow!("disk full"))
            .exit_code(Exit::Database)
            .map_err(|e| e.context("writing batch B1"))
            .unwrap_err();
        assert_eq!(exit_of(&err), Exit::Database);
        assert_eq!(format!("{err:#}"), "writing batch B1: disk full");
        let nested: anyhow::Error = Err::<(), _>(anyhow!("locked").context("taking the lease"))
            .exit_code(Exit::Database)
            .unwrap_err();
        assert_eq!(format!("{nested:#}"), "taking the lease: locked");
        assert_eq!(nested.chain().count(), 2);
    }
}
