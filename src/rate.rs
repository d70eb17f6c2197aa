//! The pace of requests across all workers, because carriers throttle status APIs. The base pace is `--max-rps`,
//! else the provider's published limit, else none. A throttled request (HTTP 429) slows every worker down: when
//! the carrier says when to come back (Retry-After, x-ratelimit-reset), no request leaves before then; when it
//! does not, the interval between requests doubles. Each success moves the pace back toward the base. Requests
//! are spaced evenly: each takes the next free slot, one interval after the previous one.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::control::{Control, Stop};

/// The first slower pace after a throttled request when there is no base pace.
const FIRST_STEP: Duration = Duration::from_millis(50);
/// The slowest pace throttling leads to.
const SLOWEST: Duration = Duration::from_secs(10);
/// Of the way back to the base pace, the part each success makes.
const RECOVERY: u32 = 16;

#[derive(Debug)]
pub struct Pace {
    /// Zero: no limit.
    base: Duration,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    interval: Duration,
    /// The earliest the next request may leave.
    next: Instant,
    /// Counts the slowdowns: a request throttled at an older pace than the current one slows nothing further.
    generation: u64,
}

/// A request's turn: the pace it was sent at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Turn(u64);

impl Pace {
    /// No limit until the carrier throttles.
    pub fn unlimited() -> Pace {
        Pace::every(Duration::ZERO)
    }

    pub fn per_second(rps: u32) -> Pace {
        Pace::every(Duration::from_secs(1) / rps.max(1))
    }

    /// One request per `interval`.
    pub fn every(interval: Duration) -> Pace {
        Pace {
            base: interval,
            state: Mutex::new(State {
                interval,
                next: Instant::now(),
                generation: 0,
            }),
        }
    }

    /// The base pace: one request per this (zero: no limit).
    pub fn base(&self) -> Duration {
        self.base
    }

    /// The pace now: one request per this (zero: no limit).
    pub fn interval(&self) -> Duration {
        self.lock().interval
    }

    /// Waits for this request's slot; gives up when the cycle must stop first. A slot past the deadline is not
    /// taken: the requests after this one keep theirs.
    pub fn acquire(&self, control: &Control) -> Result<Turn, Stop> {
        let (wait, turn) = {
            let mut state = self.lock();
            let now = Instant::now();
            let slot = state.next.max(now);
            let wait = slot - now;
            if !wait.is_zero() && wait >= control.remaining() {
                return Err(control.stopped().unwrap_or(Stop::Deadline));
            }
            state.next = slot + state.interval;
            (wait, Turn(state.generation))
        };
        if !wait.is_zero() {
            control.sleep(wait)?;
        }
        Ok(turn)
    }

    /// The carrier asked for a pause: no request leaves before it is over.
    pub fn pause(&self, pause: Duration) {
        let mut state = self.lock();
        state.next = state.next.max(Instant::now() + pause);
    }

    /// A request sent at `turn` was throttled without a word of when to come back: the interval doubles (to
    /// [`FIRST_STEP`] at least, [`SLOWEST`] at most), once for all the requests sent at the same pace (a burst
    /// of 429s is one signal, not one per request). Returns the new interval when it changed.
    pub fn slow_down(&self, turn: Turn) -> Option<Duration> {
        let mut state = self.lock();
        if turn.0 != state.generation {
            return None;
        }
        let slower = (state.interval * 2).clamp(FIRST_STEP, SLOWEST.max(self.base));
        (slower != state.interval).then(|| {
            state.interval = slower;
            state.generation += 1;
            slower
        })
    }

    /// A request that was not throttled: the pace moves back toward the base.
    pub fn recover(&self) {
        let mut state = self.lock();
        if state.interval > self.base {
            let back = (state.interval - self.base) / RECOVERY;
            state.interval = if back < Duration::from_micros(100) {
                self.base
            } else {
                state.interval - back
            };
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn slots_are_spaced_by_the_interval() {
        let control = Control::new(Duration::from_secs(60), Arc::new(AtomicUsize::new(0)));
        let limit = Pace::per_second(50);
        let started = Instant::now();
        for _ in 0..11 {
            limit.acquire(&control).unwrap();
        }
        // Ten intervals of 20 ms must have passed before the eleventh request.
        assert!(started.elapsed() >= Duration::from_millis(200));
    }

    #[test]
    fn a_stopped_cycle_does_not_wait() {
        let signal = Arc::new(AtomicUsize::new(0));
        let control = Control::new(Duration::from_secs(60), signal.clone());
        let limit = Pace::per_second(1);
        limit.acquire(&control).unwrap();
        signal.store(2, std::sync::atomic::Ordering::SeqCst);
        assert_eq!(limit.acquire(&control), Err(Stop::Signal(2)));
    }

    /// The turn of a request sent now, at the current pace.
    fn now(pace: &Pace) -> Turn {
        Turn(pace.lock().generation)
    }

    #[test]
    fn throttling_slows_down_by_doubling_within_bounds() {
        let open = Pace::unlimited();
        assert_eq!(open.slow_down(now(&open)), Some(FIRST_STEP));
        assert_eq!(open.slow_down(now(&open)), Some(FIRST_STEP * 2));
        for _ in 0..20 {
            open.slow_down(now(&open));
        }
        assert_eq!(open.interval(), SLOWEST);
        assert_eq!(
            open.slow_down(now(&open)),
            None,
            "no slower than the slowest"
        );

        let infobip = Pace::every(Duration::from_millis(520));
        assert_eq!(
            infobip.slow_down(now(&infobip)),
            Some(Duration::from_millis(1040))
        );
    }

    #[test]
    fn a_burst_of_throttled_requests_sent_at_one_pace_slows_down_once() {
        let pace = Pace::unlimited();
        let sent: Vec<Turn> = (0..8).map(|_| now(&pace)).collect();
        let changes: Vec<_> = sent.iter().filter_map(|&t| pace.slow_down(t)).collect();
        assert_eq!(changes, [FIRST_STEP]);
        // A request sent at the slower pace and throttled again slows it down again.
        assert_eq!(pace.slow_down(now(&pace)), Some(FIRST_STEP * 2));
    }

    #[test]
    fn a_slot_past_the_deadline_is_not_taken() {
        let control = Control::new(Duration::from_millis(300), Arc::new(AtomicUsize::new(0)));
        let pace = Pace::every(Duration::from_secs(1));
        pace.acquire(&control).unwrap();
        // The next slot is a second away, past the deadline: refused at once, and not booked.
        let next = pace.lock().next;
        assert_eq!(pace.acquire(&control), Err(Stop::Deadline));
        assert_eq!(pace.lock().next, next);
    }

    #[test]
    fn successes_bring_the_pace_back_to_the_base_and_no_further() {
        let pace = Pace::every(Duration::from_millis(100));
        pace.slow_down(now(&pace));
        pace.slow_down(now(&pace));
        assert_eq!(pace.interval(), Duration::from_millis(400));
        pace.recover();
        assert!(pace.interval() < Duration::from_millis(400));
        assert!(pace.interval() > Duration::from_millis(100));
        for _ in 0..1_000 {
            pace.recover();
        }
        assert_eq!(pace.interval(), Duration::from_millis(100));
        let open = Pace::unlimited();
        open.slow_down(now(&open));
        for _ in 0..1_000 {
            open.recover();
        }
        assert_eq!(open.interval(), Duration::ZERO);
    }

    #[test]
    fn a_pause_holds_every_request_until_it_is_over() {
        let control = Control::new(Duration::from_secs(60), Arc::new(AtomicUsize::new(0)));
        let pace = Pace::unlimited();
        pace.pause(Duration::from_millis(300));
        let started = Instant::now();
        pace.acquire(&control).unwrap();
        assert!(started.elapsed() >= Duration::from_millis(300));
    }
}
