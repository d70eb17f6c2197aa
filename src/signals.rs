//! SIGTERM and SIGINT: the first asks the cycle to stop (no new requests, save what was obtained, record the
//! cycle as interrupted, release the lease, exit 128+signal); a second one exits at once with that code.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize};

use anyhow::{Context, Result};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::flag;

/// Installs the handlers; the returned value holds the number of the first signal received (0: none yet).
pub fn install() -> Result<Arc<AtomicUsize>> {
    let received = Arc::new(AtomicUsize::new(0));
    let seen = Arc::new(AtomicBool::new(false));
    for signal in [SIGTERM, SIGINT] {
        // Handlers run in the order registered: a signal that finds `seen` already set ends the process.
        flag::register_conditional_shutdown(signal, 128 + signal, seen.clone())
            .and_then(|_| flag::register_usize(signal, received.clone(), signal as usize))
            .and_then(|_| flag::register(signal, seen.clone()))
            .with_context(|| format!("installing the handler for signal {signal}"))?;
    }
    Ok(received)
}
