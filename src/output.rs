//! The commands' results on standard output, and the last words on standard error. A reader that goes away
//! (`| head -1`, `| true`) ends the output quietly, as ripgrep does: nothing panics, and the exit code stays the
//! outcome's. `println!` would panic there instead (exit 101), after a cycle was recorded and before its metrics
//! were exported.

use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result};

/// Set once the reader of standard output has gone: later output is dropped.
static GONE: AtomicBool = AtomicBool::new(false);

/// Writes `text` to standard output. A closed pipe is not an error; any other failure is (a full disk, say).
pub fn print(text: &str) -> Result<()> {
    if GONE.load(Ordering::Relaxed) {
        return Ok(());
    }
    let mut out = io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {
            GONE.store(true, Ordering::Relaxed);
            Ok(())
        }
        written => written.context("writing to standard output"),
    }
}

/// Writes `text` and a newline to standard output, as [`print`].
pub fn line(text: &str) -> Result<()> {
    print(&format!("{text}\n"))
}

/// Writes a line whose output is not the outcome (what was done is done: a cycle recorded, a message closed, a
/// verdict given): a failure to write it is a warning, never another exit code.
pub fn say(text: &str) {
    if let Err(e) = line(text) {
        log::warn!("{e:#}");
    }
}

/// Writes a line to standard error, where nothing is left to report a failure to.
pub fn error_line(text: &str) {
    let _ = writeln!(io::stderr().lock(), "{text}");
}
