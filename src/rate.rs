//! `--max-rps`: a cap on the request rate across all workers, because carriers throttle status APIs. Requests
//! are spaced evenly: each takes the next free slot, `1/rps` after the previous one.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::control::{Control, Stop};

#[derive(Debug)]
pub struct RateLimit {
    interval: Duration,
    next: Mutex<Instant>,
}

impl RateLimit {
    pub fn per_second(rps: u32) -> RateLimit {
        RateLimit::every(Duration::from_secs(1) / rps.max(1))
    }

    /// One request per `interval`.
    pub fn every(interval: Duration) -> RateLimit {
        RateLimit {
            interval,
            next: Mutex::new(Instant::now()),
        }
    }

    /// Waits for this request's slot; gives up when the cycle must stop first.
    pub fn acquire(&self, control: &Control) -> Result<(), Stop> {
        let wait = {
            let mut next = self.next.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            let slot = (*next).max(now);
            *next = slot + self.interval;
            slot - now
        };
        if wait.is_zero() {
            Ok(())
        } else {
            control.sleep(wait)
        }
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
        let limit = RateLimit::per_second(50);
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
        let limit = RateLimit::per_second(1);
        limit.acquire(&control).unwrap();
        signal.store(2, std::sync::atomic::Ordering::SeqCst);
        assert_eq!(limit.acquire(&control), Err(Stop::Signal(2)));
    }
}
