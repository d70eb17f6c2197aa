//! The benchmark: `cargo run --release --example bench -- --messages 100000 [options]`.
//!
//! Builds a world of N submissions in a fresh SQLite database, starts the sandbox carrier with a given latency,
//! runs the real `dlr-poller poll` binary for the cycle in which every message is due, then again when nothing
//! is due, and reports wall time, messages/s, HTTP requests/s, the poller's peak RSS (from `/usr/bin/time -v`),
//! and the database size. It also measures two floors in the same run: the network floor (requests x latency /
//! concurrency) and the SQLite floor (a minimal program inserting the same number of audit rows, with the same
//! indexes, in batched transactions). Results go in BENCHMARKS.md.
//!
//! Options: --messages N (100000), --batch-size N (500; 0 = no batch ids, one lookup per message),
//! --latency-ms N (20), --concurrency N (8), --page-size N (1000), --ids sequential|random (sequential: ids that
//! sort in submission order; random: UUID-shaped ids in no order), --verbose 1 (the poller logs at debug level,
//! shown after each cycle: where its time went).

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

#[path = "support/mod.rs"]
mod support;
use chrono::TimeDelta;
use dlr_poller::sandbox::{Sandbox, SandboxServer, World, random_id, sequential_id};
use dlr_poller::{schedule, timefmt};

const TOKEN: &str = "bench-token";

struct Options {
    messages: usize,
    batch_size: usize,
    latency_ms: u64,
    concurrency: usize,
    page_size: usize,
    random_ids: bool,
    verbose: bool,
}

fn options() -> Result<Options> {
    let mut o = Options {
        messages: 100_000,
        batch_size: 500,
        latency_ms: 20,
        concurrency: 8,
        page_size: 1000,
        random_ids: false,
        verbose: false,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    for pair in args.chunks(2) {
        let [flag, value] = pair else {
            bail!("expected --flag value pairs, got {pair:?}")
        };
        if flag == "--ids" {
            o.random_ids = match value.as_str() {
                "sequential" => false,
                "random" => true,
                _ => bail!("--ids takes sequential or random, not {value:?}"),
            };
            continue;
        }
        let n: usize = value.parse().with_context(|| format!("{flag} {value:?}"))?;
        match flag.as_str() {
            "--messages" => o.messages = n,
            "--batch-size" => o.batch_size = n,
            "--latency-ms" => o.latency_ms = n as u64,
            "--concurrency" => o.concurrency = n,
            "--page-size" => o.page_size = n,
            "--verbose" => o.verbose = n > 0,
            other => bail!("unknown option {other}"),
        }
    }
    Ok(o)
}

struct Run {
    wall: Duration,
    peak_rss_kb: u64,
    summary: serde_json::Value,
}

fn main() -> Result<()> {
    let o = options()?;
    let bin = support::poller_binary()?;
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("bench.db");
    let start = timefmt::parse("2025-12-01T09:00:00Z")?;

    // Every message is listed in its batch (batch mode) or has no batch (per-message mode), and stays SENT, so
    // the first cycle polls all of them and the second has nothing due.
    let id = if o.random_ids {
        random_id
    } else {
        sequential_id
    };
    let world = World::uniform_with(o.messages, o.batch_size, start, id);
    let setup = Instant::now();
    poller(&bin, &db, &["migrate"], None, false)?;
    world.write_submissions(&mut rusqlite::Connection::open(&db)?)?;
    eprintln!(
        "setup: {} submissions in {:.1}s",
        o.messages,
        setup.elapsed().as_secs_f64()
    );

    let now = schedule::first_due(start);
    let sandbox = Sandbox::new(world, TOKEN, now).with_page_size(o.page_size);
    sandbox.faults(|f| f.latency = Duration::from_millis(o.latency_ms));
    let server = SandboxServer::start(Arc::new(sandbox), 0)?;
    let concurrency = o.concurrency.to_string();
    let cycle = |clock: chrono::DateTime<chrono::Utc>| {
        let stamp = timefmt::format(clock);
        let args = [
            "poll",
            "--json",
            "--now",
            &stamp,
            "--carrier-url",
            &server.url(),
            "--concurrency",
            &concurrency,
        ];
        poller(&bin, &db, &args, Some(TOKEN), o.verbose)
    };
    let first = cycle(now)?;
    let second = cycle(now + TimeDelta::minutes(1))?;
    let db_bytes: u64 = ["", "-wal"]
        .iter()
        .filter_map(|suffix| std::fs::metadata(format!("{}{suffix}", db.display())).ok())
        .map(|m| m.len())
        .sum();

    let requests = first.summary["http_requests"].as_u64().unwrap_or(0);
    let polled = first.summary["polled"].as_u64().unwrap_or(0);
    let network_floor = requests as f64 * o.latency_ms as f64 / 1000.0 / o.concurrency as f64;
    let sqlite_floor = sqlite_floor(dir.path(), o.messages, o.batch_size.max(50), id)?;
    let wall = first.wall.as_secs_f64();
    let floor = network_floor.max(sqlite_floor);

    let mut mode = if o.batch_size > 0 {
        format!("batch {}", o.batch_size)
    } else {
        "per-message".into()
    };
    if o.random_ids {
        mode.push_str(", random ids");
    }
    println!(
        "| mode | messages | latency | concurrency | cycle 1 | msg/s | req/s | peak RSS | cycle 2 (nothing due) | DB size | network floor | SQLite floor | cycle / floor |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    println!(
        "| {mode} | {} | {} ms | {} | {:.1} s | {:.0} | {:.0} | {:.0} MB | {:.2} s | {:.0} MB | {:.1} s | {:.1} s | {:.2}x |",
        o.messages,
        o.latency_ms,
        o.concurrency,
        wall,
        polled as f64 / wall,
        requests as f64 / wall,
        first.peak_rss_kb as f64 / 1024.0,
        second.wall.as_secs_f64(),
        db_bytes as f64 / 1e6,
        network_floor,
        sqlite_floor,
        wall / floor,
    );
    eprintln!(
        "cycle 1: exit {}, {polled} polled, {requests} requests; cycle 2: {} due, peak RSS {} MB",
        first.summary["exit_code"],
        second.summary["messages_due"],
        second.peak_rss_kb / 1024
    );
    if polled != o.messages as u64 {
        bail!("cycle 1 polled {polled} of {} messages", o.messages);
    }
    Ok(())
}

/// Runs the poller under `/usr/bin/time -v` and returns its wall time, peak RSS and JSON summary.
fn poller(bin: &Path, db: &Path, args: &[&str], token: Option<&str>, verbose: bool) -> Result<Run> {
    let mut cmd = Command::new("/usr/bin/time");
    cmd.arg("-v")
        .arg(bin)
        .arg("--db")
        .arg(db)
        .arg(if verbose { "-v" } else { "-q" })
        .args(args);
    if let Some(token) = token {
        cmd.env("DLR_CARRIER_TOKEN", token);
    }
    let started = Instant::now();
    let out = cmd
        .output()
        .context("running the poller under /usr/bin/time (Debian package `time`)")?;
    let wall = started.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    if verbose {
        // The poller's own lines (not /usr/bin/time's report, nor per-batch detail).
        for line in stderr
            .lines()
            .filter(|l| l.starts_with('[') && !l.contains("results stored"))
        {
            eprintln!("{line}");
        }
    }
    let peak_rss_kb = stderr
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("Maximum resident set size (kbytes): ")
        })
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    if !out.status.success() {
        bail!("dlr-poller {} failed: {stderr}", args.join(" "));
    }
    let summary = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
    Ok(Run {
        wall,
        peak_rss_kb,
        summary,
    })
}

/// The SQLite floor: the same number of audit rows, with the audit table's indexes, inserted with one prepared
/// statement in transactions of `batch` rows, on a database set up as the poller sets it up (WAL, NORMAL sync).
fn sqlite_floor(
    dir: &Path,
    rows: usize,
    batch: usize,
    id: impl Fn(usize) -> String,
) -> Result<f64> {
    let path = dir.join("floor.db");
    let mut conn = rusqlite::Connection::open(&path)?;
    conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get::<_, String>(0))?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.execute_batch(include_str!("../schema.sql"))?;
    let polled_at = "2025-12-01T11:00:00Z";
    let started = Instant::now();
    for chunk in (0..rows).collect::<Vec<_>>().chunks(batch) {
        let tx = conn.transaction()?;
        {
            let mut stmt = tx.prepare_cached(
                "INSERT INTO sms_delivery_confirmations (tracking_id, customer_id, phone_number, carrier_batch_id, \
                 delivery_status, failure_code, failure_reason, polled_at, delivery_confirmed_at, poll_attempt, \
                 created_at, cycle_id, carrier_status, carrier_found) \
                 VALUES (?1, ?2, ?3, ?4, 'PENDING', NULL, NULL, ?5, NULL, 1, ?5, 1, 'SENT', 1)",
            )?;
            for &i in chunk {
                stmt.execute((
                    id(i),
                    format!("C{:06}", i % 100_000),
                    format!("+4915{i:09}"),
                    format!("B{:06}", i / batch),
                    polled_at,
                ))?;
            }
        }
        tx.commit()?;
    }
    Ok(started.elapsed().as_secs_f64())
}
