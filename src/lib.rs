//! dlr-poller: tracks whether SMS messages reached the phone by polling the carrier's delivery-status API.
//!
//! The binary (`src/main.rs`) is glue; the work is here so that the tests, the demo, the benchmark and the
//! sandbox carrier (the `dlr-sandbox` crate beside it, which the binary does not carry) can share it.

pub mod carrier;
pub mod cli;
pub mod commands;
pub mod config;
pub mod control;
pub mod cycle;
pub mod domain;
pub mod exit;
pub mod host;
pub mod intake;
pub mod logging;
pub mod metrics;
pub mod output;
pub mod percent;
pub mod phases;
pub mod rate;
pub mod redact;
pub mod report;
pub mod retry;
pub mod schedule;
pub mod signals;
pub mod store;
pub mod summary;
pub mod timefmt;
