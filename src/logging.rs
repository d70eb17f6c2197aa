//! Log output on stderr: text for people, or JSON lines for log pipelines (ELK), each line carrying the cycle id
//! as a correlation id once a cycle has started.
//!
//! The poller's own lines name requests by their labels and hold carrier text masked at the carrier seam. The
//! lines of the libraries below it (the HTTP client, the PostgreSQL driver at `RUST_LOG=trace`) may quote a
//! request's URL or a statement's parameters: every phone number in them is masked here. The HTTP client's dumps
//! of the bytes it sends and receives (`ureq_proto::util` at trace level: the Authorization header, the bodies,
//! cut into rows of 16 bytes where no mask can find a number) are never written.

use std::io::Write;
use std::sync::atomic::{AtomicI64, Ordering};

/// How log lines are written (`--log-format`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    // Text for people, JSON lines for log pipelines (not doc comments: clap would print them in --help).
    Text,
    Json,
}

/// The running cycle's id; 0 before a cycle has started.
static CYCLE_ID: AtomicI64 = AtomicI64::new(0);

/// Tags every following log line with this cycle id.
pub fn set_cycle(id: i64) {
    CYCLE_ID.store(id, Ordering::Relaxed);
}

/// Sets up `log` for the process. `RUST_LOG` overrides the level chosen by `-v`/`-q`.
pub fn init(format: LogFormat, quiet: bool, verbose: u8) {
    let level = match (quiet, verbose) {
        (true, _) => "warn",
        (false, 0) => "info",
        (false, 1) => "debug",
        (false, _) => "trace",
    };
    let mut builder = env_logger::Builder::from_env(
        env_logger::Env::default().default_filter_or(format!("warn,dlr_poller={level}")),
    );
    match format {
        LogFormat::Text => {
            builder.format(|buf, record| {
                if byte_dump(record) {
                    return Ok(());
                }
                let target = if own(record) {
                    String::new()
                } else {
                    format!(" {}", record.target())
                };
                writeln!(
                    buf,
                    "[{} {:<5}{target}] {}",
                    buf.timestamp(),
                    record.level(),
                    message(record)
                )
            });
        }
        LogFormat::Json => {
            builder.format(|buf, record| {
                if byte_dump(record) {
                    return Ok(());
                }
                let cycle = CYCLE_ID.load(Ordering::Relaxed);
                let line = serde_json::json!({
                    "timestamp": crate::timefmt::format_millis(chrono::Utc::now()),
                    "level": record.level().as_str(),
                    "message": message(record),
                    "target": record.target(),
                    "cycle_id": (cycle != 0).then_some(cycle),
                });
                writeln!(buf, "{line}")
            });
        }
    }
    builder.init();
}

/// Whether a log line is a row of the HTTP client's dump of the bytes on the wire.
fn byte_dump(record: &log::Record) -> bool {
    record.target() == "ureq_proto::util"
}

/// Whether a log line is the poller's own.
fn own(record: &log::Record) -> bool {
    record.target().split("::").next() == Some("dlr_poller")
}

/// A line's text: the poller's own as it is, a library's with every phone number and secret-named value masked.
fn message(record: &log::Record) -> String {
    let text = record.args().to_string();
    if own(record) {
        text
    } else {
        crate::redact::mask_text(&crate::redact::mask_secrets(&text)).into_owned()
    }
}
