//! Every error of a backend is a database error (exit 74): tagged here, once, for every operation of the seam,
//! so that a backend file holds SQL and transaction shape only.

use std::time::Duration;

use anyhow::Result;
use chrono::{DateTime, Utc};

use super::postgres::Postgres;
use super::sqlite::Sqlite;
use super::{
    Backend, Closed, Cursor, CycleLease, DueAfter, DueGroup, History, Join, Lease, MetricsData,
    Phase, Rounds, Sharing, Span, Unit, Written,
};
use crate::domain::{DueMessage, Intake, LoneJobs, PollRecord, Submission};
use crate::exit::{Exit, ExitContext};
use crate::summary::Summary;

/// A backend whose every error carries exit code 74.
pub(super) struct Tagged<B>(pub B);

/// Methods that hand their call on to the backend and tag its error.
macro_rules! tag_errors {
    ($( fn $name:ident(&mut self $(, $arg:ident: $ty:ty)*) -> $ret:ty; )*) => {
        $(
            fn $name(&mut self $(, $arg: $ty)*) -> Result<$ret> {
                self.0.$name($($arg),*).exit_code(Exit::Database)
            }
        )*
    };
}

/// The seam's core for one backend, which shares cycles the way `$sharing` says.
macro_rules! tagged_backend {
    ($backend:ty, $sharing:path) => {
        impl Backend for Tagged<$backend> {
            fn sharing(&mut self) -> Sharing<'_> {
                $sharing(self)
            }

            tag_errors! {
                fn migrate(&mut self) -> (usize, usize);
                fn check_schema(&mut self) -> ();
                fn read_horizon(&mut self) -> Option<String>;
                fn save_horizon(&mut self, horizon: &str) -> ();
                fn submissions(&mut self, span: &Span, cursor: &Cursor, limit: usize) -> Vec<(Submission, Cursor)>;
                fn take_in(&mut self, intakes: &[Intake]) -> (usize, usize);
                fn due_groups(&mut self, cutoff: DateTime<Utc>) -> Vec<DueGroup>;
                fn due_messages(
                    &mut self,
                    batch_id: Option<&str>,
                    cutoff: DateTime<Utc>,
                    after: Option<&DueAfter>,
                    limit: usize
                ) -> (Vec<DueMessage>, Option<DueAfter>);
                fn failing_bulks(&mut self, now: DateTime<Utc>) -> Vec<(String, DateTime<Utc>)>;
                fn note_failing_bulks(
                    &mut self,
                    batches: &[String],
                    until: DateTime<Utc>,
                    now: DateTime<Utc>
                ) -> ();
                fn overdue(&mut self, cutoff: DateTime<Utc>, round: Option<i64>) -> (u64, Option<DateTime<Utc>>);
                fn begin_cycle(&mut self, started_at: DateTime<Utc>, cycle_now: DateTime<Utc>) -> i64;
                fn record(&mut self, cycle_id: i64, polled_at: DateTime<Utc>, records: &[PollRecord]) -> Written;
                fn finish_cycle(&mut self, s: &Summary) -> ();
                fn metrics_data(&mut self, now: DateTime<Utc>) -> MetricsData;
                fn last_finished_cycle(&mut self) -> Option<Summary>;
                fn counts(&mut self) -> (u64, u64, u64);
                fn prune(&mut self, cutoff: DateTime<Utc>, dry_run: bool, chunk: usize) -> (u64, u64);
                fn cycles(&mut self, n: u64) -> Vec<Summary>;
                fn close(&mut self, tracking_id: &str, reason: &str, now: DateTime<Utc>) -> Closed;
                fn history(&mut self, tracking_id: &str) -> Option<History>;
            }
        }
    };
}

tagged_backend!(Sqlite, Sharing::Lease);
tagged_backend!(Postgres, Sharing::Rounds);

impl CycleLease for Tagged<Sqlite> {
    tag_errors! {
        fn acquire_lease(&mut self, now: DateTime<Utc>, ttl: Duration) -> Lease;
        fn release_lease(&mut self) -> ();
    }
}

impl Rounds for Tagged<Postgres> {
    tag_errors! {
        fn join_round(&mut self, me: &str, now: DateTime<Utc>, ttl: Duration) -> Join;
        fn round_phase(&mut self, round: i64) -> Phase;
        fn take_over_round(&mut self, round: i64, me: &str) -> bool;
        fn publish_units(&mut self, round: i64, cutoff: DateTime<Utc>, lone: LoneJobs) -> u64;
        fn claim_units(&mut self, round: i64, me: &str, limit: usize, lease: Duration) -> Vec<Unit>;
        fn renew_units(&mut self, round: i64, me: &str, lease: Duration) -> u64;
        fn release_units(&mut self, round: i64, me: &str) -> u64;
        fn unit_messages(&mut self, unit: &Unit, cutoff: DateTime<Utc>) -> Vec<DueMessage>;
        fn record_units(
            &mut self,
            cycle_id: i64,
            polled_at: DateTime<Utc>,
            records: &[PollRecord],
            units: &[i64]
        ) -> Written;
        fn end_round(&mut self, round: i64) -> ();
    }
}
