//! Shared helpers for the integration tests: a migrated temp database, the real binary with a clean environment,
//! and readers for the tables the tests assert on.
#![allow(dead_code)]

use std::path::PathBuf;

use assert_cmd::Command;
use rusqlite::{Connection, OptionalExtension};
use tempfile::TempDir;

pub const TOKEN: &str = "test-token-5f2b9c";

pub struct TestDb {
    pub dir: TempDir,
    pub path: PathBuf,
}

/// One audit row, in the columns the tests check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Audit {
    pub attempt: i64,
    pub polled_at: String,
    pub status: String,
    pub carrier_status: Option<String>,
    pub found: bool,
    pub failure_code: Option<String>,
    pub failure_reason: Option<String>,
    pub confirmed_at: Option<String>,
    pub cycle_id: i64,
}

/// A message's tracking row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tracking {
    pub state: String,
    pub polls: i64,
    pub next_due_at: Option<String>,
}

/// The binary with an empty environment, so that no DLR_* or RUST_LOG of the developer leaks in. Only the
/// coverage tool's profile path is passed on, when set, so that `cargo llvm-cov` sees the binary's runs.
pub fn bin() -> Command {
    let mut cmd = Command::new(assert_cmd::cargo::cargo_bin!("dlr-poller"));
    cmd.env_clear();
    if let Some(profile) = std::env::var_os("LLVM_PROFILE_FILE") {
        cmd.env("LLVM_PROFILE_FILE", profile);
    }
    cmd
}

impl TestDb {
    /// A fresh database, migrated through the real binary.
    pub fn new() -> TestDb {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("poller.db");
        let db = TestDb { dir, path };
        db.cmd().arg("migrate").assert().code(0);
        db
    }

    /// The binary pointed at this database.
    pub fn cmd(&self) -> Command {
        let mut cmd = bin();
        cmd.arg("--db").arg(&self.path);
        cmd
    }

    /// `poll` against `url` with the cycle clock at `now` and the test token in the environment.
    pub fn poll(&self, url: &str, now: &str) -> Command {
        let mut cmd = self.cmd();
        cmd.env("DLR_CARRIER_TOKEN", TOKEN)
            .args(["poll", "--carrier-url", url, "--now", now]);
        cmd
    }

    /// `poll --json` plus `extra` flags: the exit code, the summary and stderr.
    pub fn poll_json(&self, url: &str, now: &str, extra: &[&str]) -> Run {
        let out = self
            .poll(url, now)
            .arg("--json")
            .args(extra)
            .output()
            .unwrap();
        Run {
            code: out.status.code(),
            summary: summary(&out),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    pub fn conn(&self) -> Connection {
        Connection::open(&self.path).unwrap()
    }

    pub fn submit(&self, tracking_id: &str, batch_id: Option<&str>, submitted_at: &str) {
        self.conn()
            .execute(
                "INSERT INTO sms_submissions (tracking_id, customer_id, phone_number, carrier_batch_id, submitted_at) \
                 VALUES (?1, 'C1', '+4915112345678', ?2, ?3)",
                (tracking_id, batch_id, submitted_at),
            )
            .unwrap();
    }

    pub fn audit(&self, tracking_id: &str) -> Vec<Audit> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare(
                "SELECT poll_attempt, polled_at, delivery_status, carrier_status, carrier_found, failure_code, \
                 failure_reason, delivery_confirmed_at, cycle_id FROM sms_delivery_confirmations \
                 WHERE tracking_id = ?1 ORDER BY poll_attempt",
            )
            .unwrap();
        stmt.query_map([tracking_id], |r| {
            Ok(Audit {
                attempt: r.get(0)?,
                polled_at: r.get(1)?,
                status: r.get(2)?,
                carrier_status: r.get(3)?,
                found: r.get(4)?,
                failure_code: r.get(5)?,
                failure_reason: r.get(6)?,
                confirmed_at: r.get(7)?,
                cycle_id: r.get(8)?,
            })
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
    }

    pub fn tracking(&self, tracking_id: &str) -> Option<Tracking> {
        self.conn()
            .query_row(
                "SELECT state, polls, next_due_at FROM message_tracking WHERE tracking_id = ?1",
                [tracking_id],
                |r| {
                    Ok(Tracking {
                        state: r.get(0)?,
                        polls: r.get(1)?,
                        next_due_at: r.get(2)?,
                    })
                },
            )
            .optional()
            .unwrap()
    }

    pub fn count(&self, sql: &str) -> i64 {
        self.conn().query_row(sql, [], |r| r.get(0)).unwrap()
    }
}

/// A `poll --json` run.
pub struct Run {
    pub code: Option<i32>,
    pub summary: serde_json::Value,
    pub stderr: String,
}

impl Run {
    /// The summary's counters named by `keys`, in order.
    pub fn counts(&self, keys: &[&str]) -> Vec<u64> {
        keys.iter()
            .map(|k| {
                self.summary[*k]
                    .as_u64()
                    .unwrap_or_else(|| panic!("summary lacks a count {k:?}: {}", self.summary))
            })
            .collect()
    }
}

/// Parses the `--json` summary printed on stdout.
pub fn summary(output: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not a JSON summary ({e}): {}\nstderr: {}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

/// A batch listing body in the generic wire format.
pub fn listing(batch_id: &str, messages: &[serde_json::Value], next: Option<&str>) -> String {
    serde_json::json!({"batch_id": batch_id, "messages": messages, "next_page_token": next})
        .to_string()
}

/// One message entry of the wire format.
pub fn wire(tracking_id: &str, status: &str) -> serde_json::Value {
    serde_json::json!({
        "tracking_id": tracking_id, "status": status, "error_code": null, "error_message": null,
        "status_updated_at": null
    })
}
