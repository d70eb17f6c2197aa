//! Where a cycle's time goes: each part of the cycle adds the time it spent to its phase, and the cycle reports
//! the totals (the `-v` log, `--json`'s `phases`). The parts run at once (the dispatcher reads while the workers
//! ask and the writer writes), so the phases do not add up to the cycle's wall time: a phase near the wall time
//! is the one the cycle waits for. `ask_carrier` is summed over the workers.
//!
//! The totals are the process's: a run is one cycle.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use serde::Serialize;

/// A part of the cycle that is timed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Reading the dispatcher's `sms_submissions`.
    ReadSubmissions,
    /// Writing tracking rows for new submissions that are not polled yet (not due, too old, invalid).
    TakeIn,
    /// Joining a shared round, publishing, claiming, renewing and handing back its units (PostgreSQL).
    Rounds,
    /// Reading the tracked messages due.
    ReadDue,
    /// The workers' questions to the carrier, retries and waits for the pace included, summed over workers.
    AskCarrier,
    /// Writing the audit rows of results.
    WriteResults,
    /// Updating (or creating) the tracking rows of results.
    UpdateTracking,
    /// Committing the writer's transactions.
    Commit,
    /// The writer waiting for results: near the wall time, the carrier (or the reading) is what the cycle
    /// waits for; near zero, the database.
    WriterIdle,
}

const ALL: [Phase; 9] = [
    Phase::ReadSubmissions,
    Phase::TakeIn,
    Phase::Rounds,
    Phase::ReadDue,
    Phase::AskCarrier,
    Phase::WriteResults,
    Phase::UpdateTracking,
    Phase::Commit,
    Phase::WriterIdle,
];

static NANOS: [AtomicU64; ALL.len()] = [const { AtomicU64::new(0) }; ALL.len()];

impl Phase {
    /// The phase's name in `--json` and the log.
    pub fn name(self) -> &'static str {
        match self {
            Phase::ReadSubmissions => "read_submissions",
            Phase::TakeIn => "take_in",
            Phase::Rounds => "rounds",
            Phase::ReadDue => "read_due",
            Phase::AskCarrier => "ask_carrier",
            Phase::WriteResults => "write_results",
            Phase::UpdateTracking => "update_tracking",
            Phase::Commit => "commit",
            Phase::WriterIdle => "writer_idle",
        }
    }

    fn slot(self) -> &'static AtomicU64 {
        &NANOS[self as usize]
    }

    /// Runs `f`, adding the time it takes to this phase.
    pub fn time<T>(self, f: impl FnOnce() -> T) -> T {
        let _timer = self.start();
        f()
    }

    /// Times this phase until the returned guard is dropped.
    pub fn start(self) -> Timer {
        Timer {
            phase: self,
            since: Instant::now(),
        }
    }
}

/// Adds the time since it was made to its phase when dropped.
pub struct Timer {
    phase: Phase,
    since: Instant,
}

impl Drop for Timer {
    fn drop(&mut self) {
        let nanos = u64::try_from(self.since.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.phase.slot().fetch_add(nanos, Ordering::Relaxed);
    }
}

/// Seconds spent in each phase so far, to the microsecond, in the cycle's order (a JSON object).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Phases(pub Vec<(&'static str, f64)>);

impl Serialize for Phases {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (name, seconds) in &self.0 {
            map.serialize_entry(name, seconds)?;
        }
        map.end()
    }
}

impl Phases {
    /// The totals of this process so far.
    pub fn now() -> Phases {
        Phases(
            ALL.iter()
                .map(|p| {
                    let nanos = p.slot().load(Ordering::Relaxed);
                    (p.name(), (nanos / 1_000) as f64 / 1_000_000.0)
                })
                .collect(),
        )
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// One line for the log: `read_submissions 1.2s, ...`, the phases that took any time.
    pub fn line(&self) -> String {
        let parts: Vec<String> = self
            .0
            .iter()
            .filter(|(_, s)| *s > 0.0)
            .map(|(name, s)| format!("{name} {s:.3}s"))
            .collect();
        if parts.is_empty() {
            "nothing timed".to_string()
        } else {
            parts.join(", ")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_timed_phase_adds_its_time() {
        let before = Phases::now();
        Phase::Commit.time(|| std::thread::sleep(std::time::Duration::from_millis(20)));
        let after = Phases::now();
        let get = |p: &Phases, name: &str| p.0.iter().find(|(n, _)| *n == name).unwrap().1;
        assert!(get(&after, "commit") - get(&before, "commit") >= 0.019);
        assert_eq!(after.0.len(), ALL.len());
        let json = serde_json::to_value(&after).unwrap();
        assert!(json["commit"].as_f64().unwrap() >= 0.019, "{json}");
    }
}
