//! Shared stop conditions of one cycle: the deadline, a termination signal, and an abort when continuing is
//! pointless (credentials rejected) or unsafe (results can no longer be stored). Workers and the HTTP retry loop
//! consult it before each request and while they wait.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Why work must stop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// SIGTERM or SIGINT (the number) arrived.
    Signal(i32),
    CredentialsRejected,
    /// The results can no longer be stored (database failure): polling on would lose them.
    StoreFailed,
    Deadline,
}

#[derive(Debug)]
pub struct Control {
    deadline: Instant,
    abort: AtomicU8,
    /// Set to the signal number by the signal handler (see `signals`); 0 while none arrived.
    signal: Arc<AtomicUsize>,
}

const RUNNING: u8 = 0;
const REJECTED: u8 = 1;
const STORE_FAILED: u8 = 2;

impl Control {
    pub fn new(budget: Duration, signal: Arc<AtomicUsize>) -> Control {
        Control {
            deadline: Instant::now() + budget,
            abort: AtomicU8::new(RUNNING),
            signal,
        }
    }

    /// Asks every worker to stop because the carrier refuses the credentials; the first reason sticks.
    pub fn abort_credentials_rejected(&self) {
        self.abort_with(REJECTED);
    }

    /// Asks every worker to stop because results can no longer be stored; the first reason sticks.
    pub fn abort_store_failed(&self) {
        self.abort_with(STORE_FAILED);
    }

    fn abort_with(&self, reason: u8) {
        let _ = self
            .abort
            .compare_exchange(RUNNING, reason, Ordering::SeqCst, Ordering::SeqCst);
    }

    /// `Some` once no new work may start.
    pub fn stopped(&self) -> Option<Stop> {
        match self.signal.load(Ordering::SeqCst) {
            0 => {}
            signal => return Some(Stop::Signal(signal as i32)),
        }
        match self.abort.load(Ordering::SeqCst) {
            REJECTED => Some(Stop::CredentialsRejected),
            STORE_FAILED => Some(Stop::StoreFailed),
            _ if Instant::now() >= self.deadline => Some(Stop::Deadline),
            _ => None,
        }
    }

    /// Time left until the deadline; zero once a signal arrived, so no request starts after it.
    pub fn remaining(&self) -> Duration {
        if self.signal.load(Ordering::SeqCst) != 0 {
            return Duration::ZERO;
        }
        self.deadline.saturating_duration_since(Instant::now())
    }

    /// Sleeps for `d` in short slices; returns the stop reason early if one arises. Never sleeps past the
    /// deadline: a wait that would cross it returns `Stop::Deadline` at once.
    pub fn sleep(&self, d: Duration) -> Result<(), Stop> {
        if d >= self.remaining() {
            return Err(self.stopped().unwrap_or(Stop::Deadline));
        }
        let until = Instant::now() + d;
        loop {
            if let Some(stop) = self.stopped() {
                return Err(stop);
            }
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(());
            }
            std::thread::sleep(left.min(Duration::from_millis(50)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn control(budget: Duration) -> (Control, Arc<AtomicUsize>) {
        let signal = Arc::new(AtomicUsize::new(0));
        (Control::new(budget, signal.clone()), signal)
    }

    #[test]
    fn abort_is_seen_and_sticks() {
        let (control, _) = control(Duration::from_secs(60));
        assert_eq!(control.stopped(), None);
        control.abort_credentials_rejected();
        assert_eq!(control.stopped(), Some(Stop::CredentialsRejected));
        assert_eq!(
            control.sleep(Duration::from_millis(10)),
            Err(Stop::CredentialsRejected)
        );
        control.abort_store_failed();
        assert_eq!(control.stopped(), Some(Stop::CredentialsRejected));
    }

    #[test]
    fn a_signal_stops_everything_at_once() {
        let (control, signal) = control(Duration::from_secs(60));
        signal.store(15, Ordering::SeqCst);
        assert_eq!(control.stopped(), Some(Stop::Signal(15)));
        assert_eq!(control.remaining(), Duration::ZERO);
        assert_eq!(
            control.sleep(Duration::from_millis(1)),
            Err(Stop::Signal(15))
        );
    }

    #[test]
    fn sleep_never_crosses_the_deadline() {
        let (control, _) = control(Duration::from_secs(30));
        // A wait that would cross the deadline is refused without waiting: it returns before the deadline has
        // passed (a sleep that went on until the deadline, or beyond, would find the cycle stopped afterwards).
        assert_eq!(control.sleep(Duration::from_secs(60)), Err(Stop::Deadline));
        assert_eq!(control.stopped(), None, "returned before the deadline");
        // Refusing it stopped nothing: a wait that fits still runs to its end.
        assert_eq!(control.sleep(Duration::from_millis(1)), Ok(()));
    }
}
