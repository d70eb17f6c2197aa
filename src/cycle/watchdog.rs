//! The guard against a database that stops answering.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::GRACE;
use crate::exit::Exit;
use crate::store::Target;

/// How long past the deadline and the grace a cycle may still run before the watchdog ends the process: the
/// deadline itself, within these bounds.
const WATCHDOG_MIN: Duration = Duration::from_secs(10);
const WATCHDOG_MAX: Duration = Duration::from_secs(60);

/// A running watchdog; [`Watchdog::stand_down`] once the cycle is over.
pub(super) struct Watchdog {
    done: Arc<AtomicBool>,
}

impl Watchdog {
    pub fn stand_down(&self) {
        self.done.store(true, Ordering::Relaxed);
    }
}

/// Starts a thread that ends the process when the cycle is still running well after its deadline and grace:
/// the workers stop themselves by then, so only a database that stopped answering (a server frozen, a network
/// that swallows packets while the connection stays up) can hold it. Every transaction is whole or absent, so
/// what was committed stays and the next run goes on.
pub(super) fn start(db: &Target, deadline: Duration) -> Result<Watchdog> {
    let done = Arc::new(AtomicBool::new(false));
    let margin = deadline.clamp(WATCHDOG_MIN, WATCHDOG_MAX);
    let limit = deadline + GRACE + margin;
    let db = db.to_string();
    let finished = done.clone();
    std::thread::Builder::new()
        .name("watchdog".into())
        .spawn(move || {
            let until = Instant::now() + limit;
            while Instant::now() < until {
                if finished.load(Ordering::Relaxed) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            if !finished.load(Ordering::Relaxed) {
                log::error!(
                    "the cycle is still running {}s past its deadline and grace: the database {db} stopped \
                     answering; exiting without recording the cycle (what was committed stays; the next run goes on)",
                    margin.as_secs()
                );
                std::process::exit(Exit::Database.code().into());
            }
        })
        .context("starting the watchdog thread")?;
    Ok(Watchdog { done })
}
