//! The one-command demo: `cargo run --release --example demo [-- --carrier NAME]`.
//!
//! Creates a SQLite database of sample submissions, starts the sandbox carrier on loopback (with some latency,
//! random 5xx and a burst of 429s), and runs the real `dlr-poller poll` binary through a simulated 72 hours of
//! cycles, two hours apart. Prints each cycle's summary, the final tally, and one message's history.
//!
//! `--carrier NAME` (twilio, vonage, sinch, infobip, telnyx) makes the sandbox speak that provider's API, with
//! its ids, words, error codes and quirks and the account's other traffic in its listings, and the poller use
//! its profile.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};

#[path = "support/mod.rs"]
mod support;
use chrono::TimeDelta;
use dlr_poller::{schedule, timefmt};
use dlr_sandbox::{Dialect, Sandbox, SandboxServer, World};

const MESSAGES: usize = 2_000;
const TOKEN: &str = "demo-token";

fn main() -> Result<()> {
    let dialect = match std::env::args().skip(1).collect::<Vec<_>>().as_slice() {
        [] => Dialect::Generic,
        [flag, name] if flag == "--carrier" => Dialect::parse(name).with_context(|| {
            format!("unknown --carrier {name:?}: generic, twilio, vonage, sinch, infobip or telnyx")
        })?,
        other => bail!("usage: demo [--carrier NAME], not {other:?}"),
    };
    let bin = support::poller_binary()?;
    let dir = std::env::temp_dir().join("dlr-poller-demo");
    std::fs::create_dir_all(&dir)?;
    let db = dir.join("demo.db");
    let metrics = dir.join("dlr_poller.prom");
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
    }

    let start = timefmt::parse("2025-12-01T09:00:00Z")?;
    let world = match dialect {
        Dialect::Generic => World::generate(MESSAGES, 500, start, 2025),
        dialect => World::generate_for(dialect, MESSAGES, 500, start, 2025),
    };
    run(&bin, &db, &["migrate"], None)?;
    world.write_submissions(&mut rusqlite::Connection::open(&db)?)?;
    println!(
        "database: {} ({MESSAGES} submissions, batches of 500)",
        db.display()
    );

    let sandbox = Arc::new(Sandbox::new(world, TOKEN, start).with_dialect(dialect));
    sandbox.faults(|f| {
        f.latency = Duration::from_millis(2);
        f.error_rate = 0.02;
    });
    let server = SandboxServer::start(sandbox.clone(), 0)?;
    println!(
        "sandbox carrier: {} speaking {} (2 ms latency, 2% random HTTP 500)\n",
        server.url(),
        dialect.name()
    );
    // The sandbox has no rate limit: the providers' own (Infobip 120 requests a minute) would only slow the demo.
    let mut carrier = vec!["--carrier", dialect.name(), "--max-rps", "1000"];
    if let Some(account) = dialect.account() {
        carrier.extend(["--carrier-account", account]);
    }

    println!(
        "{:<22} {:>5} {:>4} {:>6} {:>9} {:>6} {:>7} {:>11} {:>9} {:>7} {:>7}",
        "CYCLE CLOCK",
        "EXIT",
        "DUE",
        "POLLED",
        "DELIVERED",
        "FAILED",
        "PENDING",
        "UNCONFIRMED",
        "NOT FOUND",
        "REQS",
        "RETRIES"
    );
    let mut now = schedule::first_due(start);
    let end = schedule::slot(start, schedule::SLOTS) + TimeDelta::hours(2);
    while now <= end {
        if now == start + TimeDelta::hours(20) {
            sandbox.faults(|f| {
                f.rate_limited_next = 3;
                f.retry_after_secs = 1;
            });
        }
        sandbox.set_clock(now);
        let stamp = timefmt::format(now);
        let url = server.url();
        let metrics = metrics
            .to_str()
            .context("the temporary directory's path is not UTF-8")?;
        let mut args = vec!["poll", "--now", &stamp, "--json", "--carrier-url", &url];
        args.extend(["--metrics-file", metrics]);
        args.extend(&carrier);
        let out = run(&bin, &db, &args, Some(TOKEN))?;
        let s: serde_json::Value =
            serde_json::from_str(&out).context("reading the cycle summary")?;
        let n = |key: &str| s[key].as_u64().unwrap_or(0);
        println!(
            "{:<22} {:>5} {:>4} {:>6} {:>9} {:>6} {:>7} {:>11} {:>9} {:>7} {:>7}",
            stamp,
            n("exit_code"),
            n("messages_due"),
            n("polled"),
            n("delivered"),
            n("failed"),
            n("pending"),
            n("closed_unconfirmed"),
            n("not_found"),
            n("http_requests"),
            n("retries")
        );
        now += TimeDelta::hours(2);
    }

    let conn = rusqlite::Connection::open(&db)?;
    println!("\nfinal tracking states:");
    let mut stmt =
        conn.prepare("SELECT state, COUNT(*) FROM message_tracking GROUP BY state ORDER BY state")?;
    for row in stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))? {
        let (state, n) = row?;
        println!("  {state:<12} {n}");
    }
    let audit: i64 =
        conn.query_row("SELECT COUNT(*) FROM sms_delivery_confirmations", [], |r| {
            r.get(0)
        })?;
    println!("  audit rows   {audit}");
    let example: String = conn.query_row(
        "SELECT tracking_id FROM message_tracking WHERE state = 'DELIVERED' AND polls > 2 LIMIT 1",
        [],
        |r| r.get(0),
    )?;
    println!("\n$ dlr-poller history {example}");
    print!("{}", run(&bin, &db, &["history", &example], None)?);
    println!("\n$ dlr-poller cycles --last 3");
    print!("{}", run(&bin, &db, &["cycles", "--last", "3"], None)?);
    println!(
        "\nmetrics of the last cycle (Prometheus text format): {}",
        metrics.display()
    );
    println!(
        "explore further: {} --db {} history {example}",
        bin.display(),
        db.display()
    );
    Ok(())
}

/// Runs the poller binary and returns its stdout; exit codes 0 and 75 (partial) are expected in the demo.
fn run(bin: &Path, db: &Path, args: &[&str], token: Option<&str>) -> Result<String> {
    let mut cmd = Command::new(bin);
    cmd.arg("--db").arg(db).arg("-q").args(args);
    if let Some(token) = token {
        cmd.env("DLR_CARRIER_TOKEN", token);
    }
    let out = cmd
        .output()
        .with_context(|| format!("running {}", bin.display()))?;
    let code = out.status.code().unwrap_or(-1);
    if code != 0 && code != 75 {
        bail!(
            "dlr-poller {} exited {code}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8(out.stdout)?)
}
