//! The benchmark: `cargo run --release --example bench -- --messages 100000 [options]`.
//!
//! Builds a world of N submissions in a fresh SQLite database, starts the sandbox carrier with a given latency,
//! runs the real `dlr-poller poll` binary for the cycle in which every message is due, then again when nothing
//! is due, and reports wall time, messages/s, HTTP requests/s, the poller's peak RSS (from `/usr/bin/time -v`),
//! and the database size. It also measures two floors in the same run: the network floor (requests x latency /
//! concurrency) and the SQLite floor (a minimal program writing the same number of audit rows and first tracking
//! rows, with the same ids and indexes, in transactions of 25,000 as the poller's writer). Results go in BENCHMARKS.md.
//!
//! With `--postgres URL` (a superuser URL of a running PostgreSQL server) the same runs against a fresh database
//! on that server (dropped at the end), and the floor is the PostgreSQL one: binary COPY of the same number of
//! audit rows with the audit table's indexes, plus a guarded tracking update of as many rows through `unnest`,
//! 25,000 rows per transaction (what one transaction of results does).
//!
//! `--replicas N` (with `--postgres`) starts N pollers together for each cycle, as a CronJob with parallelism N
//! would: the cycle's time is the slowest replica's, the counts are summed, peak RSS is the largest.
//!
//! `--carrier NAME` runs against the sandbox speaking that provider's dialect (twilio, vonage, sinch, infobip,
//! telnyx) with the poller's profile for it, and reports requests per 1,000 due messages. The providers' default
//! rate limits are lifted (`--max-rps`) so that the run measures the poller: what a limit costs follows from
//! the request count.
//!
//! Options: --messages N (100000), --batch-size N (500; 0 = no batch ids, one lookup per message),
//! --latency-ms N (20), --concurrency N (8), --page-size N (1000), --ids sequential|random (sequential: ids that
//! sort in submission order; random: UUID-shaped ids in no order), --verbose 1 (the poller logs at debug level,
//! shown after each cycle: where its time went), --send-rate N (messages a second the send went out at; 0, the
//! default: all in one instant; a Twilio send is listed by the minute, so its rate decides the work),
//! --pending P (the share of the send, in percent, still pending after its second poll; 100, the default: all
//! of it. Below 100 the others deliver between the first poll and the second, and a third cycle, two hours
//! later, polls only the P% still pending: the later cycle of a send, reported on a line of its own),
//! --dead-batches N (the first N batches are dead: their bulk question answers 503 on every attempt while each
//! of their messages can be asked about on its own; the summary's fallback counts are reported),
//! --store-floor 0 (skip the store floor, reported as 0: it takes as long as the cycle at five million),
//! --submissions-index 0 (drop the `(submitted_at, tracking_id)` index of sms_submissions after `migrate`: a
//! dispatcher's table without it).
//!
//! `BENCH_WRAP` (environment) runs the poller under a profiler, `{run}` replaced by the run's number:
//! `BENCH_WRAP="heaptrack -o /tmp/poller-{run}"`.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

#[path = "support/mod.rs"]
mod support;
use chrono::TimeDelta;
use dlr_poller::{schedule, timefmt};
use dlr_sandbox::{
    Dialect, Fate, Sandbox, SandboxServer, SimMessage, World, random_id, sequential_id,
};

const TOKEN: &str = "bench-token";

struct Options {
    messages: usize,
    batch_size: usize,
    latency_ms: u64,
    concurrency: usize,
    page_size: usize,
    random_ids: bool,
    verbose: bool,
    postgres: Option<String>,
    replicas: usize,
    dialect: Dialect,
    send_rate: usize,
    pending: usize,
    dead_batches: usize,
    store_floor: bool,
    submissions_index: bool,
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
        postgres: None,
        replicas: 1,
        dialect: Dialect::Generic,
        send_rate: 0,
        pending: 100,
        dead_batches: 0,
        store_floor: true,
        submissions_index: true,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    for pair in args.chunks(2) {
        let [flag, value] = pair else {
            bail!("expected --flag value pairs, got {pair:?}")
        };
        if flag == "--postgres" {
            o.postgres = Some(value.clone());
            continue;
        }
        if flag == "--carrier" {
            o.dialect =
                Dialect::parse(value).with_context(|| format!("unknown --carrier {value:?}"))?;
            continue;
        }
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
            "--replicas" => o.replicas = n.max(1),
            "--send-rate" => o.send_rate = n,
            "--pending" => o.pending = n.min(100),
            "--dead-batches" => o.dead_batches = n,
            "--store-floor" => o.store_floor = n > 0,
            "--submissions-index" => o.submissions_index = n > 0,
            other => bail!("unknown option {other}"),
        }
    }
    if o.replicas > 1 && o.postgres.is_none() {
        bail!("--replicas needs --postgres: replicas share a cycle on PostgreSQL only");
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
    let db = match &o.postgres {
        Some(admin) => Db::postgres(admin, dir.path())?,
        None => Db::Sqlite(dir.path().join("bench.db")),
    };
    let start = timefmt::parse("2025-12-01T09:00:00Z")?;

    // Every message is listed in its batch (batch mode) or has no batch (per-message mode), and stays SENT, so
    // the first cycle polls all of them and the second has nothing due.
    let id = if o.random_ids {
        random_id
    } else {
        sequential_id
    };
    // The floors write the same ids the world has: a provider's (Twilio SIDs, Telnyx UUIDs) are in no order.
    let dialect = o.dialect;
    let floor_id = |i: usize| match dialect {
        Dialect::Generic => id(i),
        dialect => dialect.tracking_id(i),
    };
    let world = match o.dialect {
        Dialect::Generic => World::uniform_with(o.messages, o.batch_size, start, id),
        dialect => World::uniform_for(dialect, o.messages, o.batch_size, start),
    };
    // The others deliver four hours after submission: after the first poll (at most 3h25m after submission for a
    // send of up to 85 minutes), before the second.
    let mut world = world;
    if o.pending < 100 {
        let pending = o.pending;
        let mut i = 0;
        world.edit(|m| {
            if i % 100 >= pending {
                m.fate = Fate::Deliver {
                    after: TimeDelta::hours(4),
                };
            }
            i += 1;
        });
    }
    let (world, last) = match o.send_rate {
        0 => (world, start),
        rate => {
            let at =
                |i: usize| start + TimeDelta::milliseconds((i as u64 * 1000 / rate as u64) as i64);
            let spread = world
                .messages()
                .iter()
                .enumerate()
                .map(|(i, m)| SimMessage {
                    submitted_at: at(i),
                    ..m.clone()
                });
            (
                World::new(spread.collect()),
                at(o.messages.saturating_sub(1)),
            )
        }
    };
    let setup = Instant::now();
    poller(&bin, &db, &["migrate"], None, false)?;
    if !o.submissions_index {
        drop_submissions_index(&db)?;
    }
    match &db {
        Db::Sqlite(path) => world.write_submissions(&mut rusqlite::Connection::open(path)?)?,
        Db::Postgres { url, password, .. } => pg_submissions(url, password, &world)?,
    }
    eprintln!(
        "setup: {} submissions in {:.1}s",
        o.messages,
        setup.elapsed().as_secs_f64()
    );

    let now = schedule::first_due(last);
    let sandbox = Sandbox::new(world, TOKEN, now)
        .with_page_size(o.page_size)
        .with_dialect(o.dialect);
    sandbox.faults(|f| {
        f.latency = Duration::from_millis(o.latency_ms);
        f.dead_batches = (0..o.dead_batches).map(|b| format!("B{b:06}")).collect();
    });
    let server = SandboxServer::start(Arc::new(sandbox), 0)?;
    let concurrency = o.concurrency.to_string();
    let url = server.url();
    let cycle = |clock: chrono::DateTime<chrono::Utc>| {
        let stamp = timefmt::format(clock);
        let mut args = vec![
            "poll",
            "--json",
            "--now",
            &stamp,
            "--carrier-url",
            &url,
            "--concurrency",
            &concurrency,
            "--carrier",
            o.dialect.name(),
            "--max-rps",
            "100000",
        ];
        if let Some(account) = o.dialect.account() {
            args.extend(["--carrier-account", account]);
        }
        let args = args.as_slice();
        if o.replicas == 1 {
            return poller(&bin, &db, args, Some(TOKEN), o.verbose);
        }
        // Replicas started together: the cycle lasts as long as the slowest; counts add up.
        let runs: Vec<Result<Run>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..o.replicas)
                .map(|_| s.spawn(|| poller(&bin, &db, args, Some(TOKEN), o.verbose)))
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| bail!("a replica thread panicked"))
                })
                .collect()
        });
        let runs = runs.into_iter().collect::<Result<Vec<Run>>>()?;
        let sum = |key: &str| -> u64 {
            runs.iter()
                .map(|r| r.summary[key].as_u64().unwrap_or(0))
                .sum()
        };
        let polled: Vec<u64> = runs
            .iter()
            .map(|r| r.summary["polled"].as_u64().unwrap_or(0))
            .collect();
        eprintln!("replicas polled {polled:?}");
        Ok(Run {
            wall: runs.iter().map(|r| r.wall).max().unwrap_or_default(),
            peak_rss_kb: runs.iter().map(|r| r.peak_rss_kb).max().unwrap_or(0),
            summary: serde_json::json!({
                "polled": sum("polled"),
                "http_requests": sum("http_requests"),
                "messages_due": sum("messages_due"),
                "exit_code": runs.iter().filter_map(|r| r.summary["exit_code"].as_u64()).max(),
            }),
        })
    };
    let first = cycle(now)?;
    // The later cycle of a send: two hours on most of it delivers, two more and only the rest is due.
    let (later, quiet) = if o.pending < 100 {
        server.sandbox().set_clock(now + TimeDelta::hours(2));
        cycle(now + TimeDelta::hours(2))?;
        server.sandbox().set_clock(now + TimeDelta::hours(4));
        let requests = server.sandbox().requests();
        let run = cycle(now + TimeDelta::hours(4))?;
        (
            Some((run, server.sandbox().requests() - requests)),
            now + TimeDelta::hours(4),
        )
    } else {
        (None, now)
    };
    // Ten minutes on: nothing is due, and on PostgreSQL it is a round of its own (runs within five minutes of a
    // finished round have nothing to do).
    let second = cycle(quiet + TimeDelta::minutes(10))?;
    let db_bytes = db.size()?;

    let requests = first.summary["http_requests"].as_u64().unwrap_or(0);
    let polled = first.summary["polled"].as_u64().unwrap_or(0);
    let network_floor =
        requests as f64 * o.latency_ms as f64 / 1000.0 / (o.concurrency * o.replicas) as f64;
    let store_floor = match &db {
        _ if !o.store_floor => 0.0,
        Db::Sqlite(_) => sqlite_floor(dir.path(), o.messages, floor_id)?,
        Db::Postgres { url, password, .. } => pg_floor(url, password, o.messages, floor_id)?,
    };
    let wall = first.wall.as_secs_f64();
    let floor = network_floor.max(store_floor);

    let mut mode = if o.batch_size > 0 {
        format!("batch {}", o.batch_size)
    } else {
        "per-message".into()
    };
    if o.random_ids {
        mode.push_str(", random ids");
    }
    if o.postgres.is_some() {
        mode.push_str(", PostgreSQL");
    }
    if o.send_rate > 0 {
        mode.push_str(&format!(", sent at {}/s", o.send_rate));
    }
    if o.replicas > 1 {
        mode.push_str(&format!(", {} replicas", o.replicas));
    }
    if o.dead_batches > 0 {
        mode.push_str(&format!(", {} dead", o.dead_batches));
    }
    if o.dialect != Dialect::Generic {
        mode = format!("{} ({mode})", o.dialect.name());
    }
    println!(
        "| mode | messages | latency | concurrency | cycle 1 | msg/s | req/s | peak RSS | cycle 2 (nothing due) | DB size | network floor | store floor | cycle / floor |"
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
        store_floor,
        wall / floor,
    );
    if o.dead_batches > 0 {
        eprintln!(
            "dead batches: {} jobs fell back, {} messages asked one by one",
            first.summary["bulk_fallbacks"], first.summary["asked_alone"]
        );
    }
    eprintln!(
        "cycle 1: exit {}, {polled} polled, {requests} requests ({:.1} per 1,000 messages); cycle 2: {} due, \
         peak RSS {} MB",
        first.summary["exit_code"],
        requests as f64 * 1000.0 / polled.max(1) as f64,
        second.summary["messages_due"],
        second.peak_rss_kb / 1024
    );
    // Where cycle 1's time went (the phases overlap; the carrier's is summed over the workers).
    if let Some(phases) = first.summary["phases"].as_object() {
        let line: Vec<String> = phases
            .iter()
            .filter_map(|(name, s)| Some(format!("{name} {:.1}s", s.as_f64()?)))
            .collect();
        eprintln!("cycle 1 by phase: {}", line.join(", "));
    }
    if let Some((run, served)) = &later {
        let due = run.summary["messages_due"].as_u64().unwrap_or(0);
        println!();
        println!(
            "| mode | messages | later cycle: due | wall | requests | per 1,000 due | peak RSS | exit |"
        );
        println!("|---|---|---|---|---|---|---|---|");
        println!(
            "| {mode} | {} | {due} ({}% pending) | {:.1} s | {served} | {:.1} | {:.0} MB | {} |",
            o.messages,
            o.pending,
            run.wall.as_secs_f64(),
            *served as f64 * 1000.0 / due.max(1) as f64,
            run.peak_rss_kb as f64 / 1024.0,
            run.summary["exit_code"],
        );
    }
    if let Db::Postgres { admin, name, .. } = &db {
        let mut client = postgres::Client::connect(admin, postgres::NoTls)?;
        client.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))?;
    }
    if polled != o.messages as u64 {
        bail!("cycle 1 polled {polled} of {} messages", o.messages);
    }
    Ok(())
}

/// The database under test.
enum Db {
    Sqlite(std::path::PathBuf),
    /// A fresh database on the server `admin` points at: its URL, the password file, its name.
    Postgres {
        admin: String,
        url: String,
        password: std::path::PathBuf,
        name: String,
    },
}

impl Db {
    fn postgres(admin: &str, dir: &Path) -> Result<Db> {
        let name = format!("dlr_bench_{}", std::process::id());
        let mut client = postgres::Client::connect(admin, postgres::NoTls)
            .with_context(|| format!("connecting to --postgres {admin}"))?;
        client.batch_execute(&format!("CREATE DATABASE {name}"))?;
        let config: postgres::Config = admin.parse()?;
        let password = dir.join("db-password");
        std::fs::write(
            &password,
            config
                .get_password()
                .map(|p| p.to_vec())
                .unwrap_or_default(),
        )?;
        let base = admin.rsplit_once('/').map_or(admin, |(b, _)| b);
        let url = format!("{base}/{name}");
        let mut client = postgres::Client::connect(&url, postgres::NoTls)?;
        client.batch_execute(
            "CREATE TABLE sms_submissions (tracking_id text PRIMARY KEY, customer_id text, phone_number text, \
             carrier_batch_id text, submitted_at timestamptz NOT NULL); \
             CREATE INDEX ON sms_submissions (submitted_at, tracking_id);",
        )?;
        Ok(Db::Postgres {
            admin: admin.to_string(),
            url,
            password,
            name,
        })
    }

    /// The arguments that point the poller at it.
    fn args(&self) -> Vec<std::ffi::OsString> {
        match self {
            Db::Sqlite(path) => vec!["--db".into(), path.into()],
            Db::Postgres { url, password, .. } => {
                let mut args = vec!["--db".into(), url.into()];
                if std::fs::metadata(password).is_ok_and(|m| m.len() > 0) {
                    args.extend(["--db-password-file".into(), password.into()]);
                }
                args
            }
        }
    }

    fn size(&self) -> Result<u64> {
        Ok(match self {
            Db::Sqlite(path) => ["", "-wal"]
                .iter()
                .filter_map(|suffix| std::fs::metadata(format!("{}{suffix}", path.display())).ok())
                .map(|m| m.len())
                .sum(),
            Db::Postgres { url, .. } => {
                let mut client = postgres::Client::connect(url, postgres::NoTls)?;
                let size: i64 = client
                    .query_one("SELECT pg_database_size(current_database())", &[])?
                    .get(0);
                size as u64
            }
        })
    }
}

/// Writes the world's submissions into the dispatcher's table on PostgreSQL by COPY.
fn pg_submissions(url: &str, _password: &Path, world: &World) -> Result<()> {
    use std::io::Write;
    let mut client = postgres::Client::connect(url, postgres::NoTls)?;
    let mut sink = client.copy_in(
        "COPY sms_submissions (tracking_id, customer_id, phone_number, carrier_batch_id, submitted_at) FROM STDIN",
    )?;
    let mut buf = std::io::BufWriter::new(&mut sink);
    for m in world.messages() {
        writeln!(
            buf,
            "{}\t{}\t{}\t{}\t{}",
            m.tracking_id,
            m.customer_id,
            m.phone_number,
            m.batch_id.as_deref().unwrap_or("\\N"),
            timefmt::format(m.submitted_at)
        )?;
    }
    buf.flush()?;
    drop(buf);
    sink.finish()?;
    Ok(())
}

/// The PostgreSQL floor, in a scratch schema of the bench database: binary COPY of `rows` audit rows into the audit
/// table (with its indexes), then a guarded update of as many tracking rows through `unnest`, each in
/// transactions of 25,000 rows. The tracking rows are inserted first, untimed.
fn pg_floor(url: &str, _password: &Path, rows: usize, id: impl Fn(usize) -> String) -> Result<f64> {
    use postgres::binary_copy::BinaryCopyInWriter;
    use postgres::types::{ToSql, Type};
    const CHUNK: usize = 25_000;
    let mut client = postgres::Client::connect(url, postgres::NoTls)?;
    client.batch_execute("CREATE SCHEMA floor; SET search_path = floor")?;
    client.batch_execute(include_str!("../schema.postgres.sql"))?;
    let ids: Vec<String> = (0..rows).map(&id).collect();
    let polled_at = timefmt::parse("2025-12-01T11:00:00Z")?;
    let due = timefmt::parse("2025-12-01T13:00:00Z")?;
    client.execute(
        "INSERT INTO message_tracking (tracking_id, submitted_at, state, polls, next_due_at) \
         SELECT id, $2, 'OPEN', 0, $3 FROM unnest($1::text[]) AS u(id)",
        &[&ids, &polled_at, &polled_at],
    )?;
    client.batch_execute("VACUUM ANALYZE message_tracking")?;
    let started = Instant::now();
    for (n, chunk) in ids.chunks(CHUNK).enumerate() {
        let mut tx = client.transaction()?;
        let sink = tx.copy_in(
            "COPY sms_delivery_confirmations (tracking_id, customer_id, phone_number, carrier_batch_id, \
             delivery_status, polled_at, poll_attempt, created_at, cycle_id, carrier_status, carrier_found) \
             FROM STDIN BINARY",
        )?;
        let mut writer = BinaryCopyInWriter::new(
            sink,
            &[
                Type::TEXT,
                Type::TEXT,
                Type::TEXT,
                Type::TEXT,
                Type::TEXT,
                Type::TIMESTAMPTZ,
                Type::INT4,
                Type::TIMESTAMPTZ,
                Type::INT8,
                Type::TEXT,
                Type::BOOL,
            ],
        );
        let batch = format!("B{n:06}");
        for (i, tracking_id) in chunk.iter().enumerate() {
            let customer = format!("C{:06}", i % 100_000);
            let phone = format!("+4915{i:09}");
            let row: [&(dyn ToSql + Sync); 11] = [
                tracking_id,
                &customer,
                &phone,
                &batch,
                &"PENDING",
                &polled_at,
                &1i32,
                &polled_at,
                &1i64,
                &"SENT",
                &true,
            ];
            writer.write(&row)?;
        }
        writer.finish()?;
        let polls = vec![0i32; chunk.len()];
        tx.execute(
            "UPDATE message_tracking t SET polls = t.polls + 1, next_due_at = $3, last_status = 'PENDING', \
             last_polled_at = $4 FROM unnest($1::text[], $2::int[]) AS u(id, polls) \
             WHERE t.tracking_id = u.id AND t.polls = u.polls AND t.state = 'OPEN'",
            &[&chunk, &polls, &due, &polled_at],
        )?;
        tx.commit()?;
    }
    Ok(started.elapsed().as_secs_f64())
}

/// Drops the index the poller asks the dispatcher's table to have, as a table whose owners did not add it.
fn drop_submissions_index(db: &Db) -> Result<()> {
    match db {
        Db::Sqlite(path) => {
            rusqlite::Connection::open(path)?
                .execute_batch("DROP INDEX IF EXISTS idx_sms_submissions_submitted_at")?;
        }
        Db::Postgres { url, .. } => {
            let mut client = postgres::Client::connect(url, postgres::NoTls)?;
            for row in client.query(
                "SELECT indexname::text FROM pg_indexes WHERE tablename = 'sms_submissions' \
                 AND indexname <> 'sms_submissions_pkey'",
                &[],
            )? {
                let name: String = row.get(0);
                client.batch_execute(&format!("DROP INDEX \"{name}\""))?;
            }
        }
    }
    Ok(())
}

/// Runs the poller under `/usr/bin/time -v` and returns its wall time, peak RSS and JSON summary.
fn poller(bin: &Path, db: &Db, args: &[&str], token: Option<&str>, verbose: bool) -> Result<Run> {
    let mut cmd = Command::new("/usr/bin/time");
    cmd.arg("-v");
    // A profiler to run the poller under, for looking into its memory or time: `BENCH_WRAP="heaptrack -o
    // /tmp/poller-{run}"` (peak RSS is then the profiler's too).
    if let Ok(wrap) = std::env::var("BENCH_WRAP") {
        static RUNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(1);
        let run = RUNS
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            .to_string();
        cmd.args(wrap.split_whitespace().map(|w| w.replace("{run}", &run)));
    }
    cmd.arg(bin)
        .args(db.args())
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
    // The summary is the line of stdout that is a JSON object (a profiler may print around it).
    let stdout = String::from_utf8_lossy(&out.stdout);
    let summary = stdout
        .lines()
        .find(|l| l.starts_with('{'))
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or(serde_json::Value::Null);
    Ok(Run {
        wall,
        peak_rss_kb,
        summary,
    })
}

/// The SQLite floor: the same number of audit rows and first tracking rows, with the tables' indexes, inserted
/// with one prepared statement each in transactions of 25,000 results sorted by id, on a database set up as the
/// poller sets up its writer (WAL, NORMAL sync, a 64 MB page cache).
fn sqlite_floor(dir: &Path, rows: usize, id: impl Fn(usize) -> String) -> Result<f64> {
    // As many results per transaction as the poller's writer takes at most.
    const CHUNK: usize = 25_000;
    let path = dir.join("floor.db");
    let mut conn = rusqlite::Connection::open(&path)?;
    conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get::<_, String>(0))?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "cache_size", -(64 << 10))?;
    conn.execute_batch(include_str!("../schema.sql"))?;
    let polled_at = "2025-12-01T11:00:00Z";
    let started = Instant::now();
    for chunk in (0..rows).collect::<Vec<_>>().chunks(CHUNK) {
        let tx = conn.transaction()?;
        {
            let mut audit = tx.prepare_cached(
                "INSERT INTO sms_delivery_confirmations (tracking_id, customer_id, phone_number, carrier_batch_id, \
                 delivery_status, failure_code, failure_reason, polled_at, delivery_confirmed_at, poll_attempt, \
                 created_at, cycle_id, carrier_status, carrier_found) \
                 VALUES (?1, ?2, ?3, NULL, 'PENDING', NULL, NULL, ?4, NULL, 1, ?4, 1, 'SENT', 1)",
            )?;
            let mut tracking = tx.prepare_cached(
                "INSERT INTO message_tracking (tracking_id, customer_id, phone_number, carrier_batch_id, \
                 submitted_at, state, polls, next_due_at, last_status, last_polled_at) \
                 VALUES (?1, ?2, ?3, NULL, '2025-12-01T09:00:00Z', 'OPEN', 1, '2025-12-01T13:00:00Z', 'PENDING', ?4)",
            )?;
            let mut ids: Vec<(String, usize)> = chunk.iter().map(|&i| (id(i), i)).collect();
            // The writer sorts a transaction's results by tracking id, as this does.
            ids.sort_unstable();
            for (tracking_id, i) in ids {
                let customer = format!("C{:06}", i % 100_000);
                let phone = format!("+4915{i:09}");
                tracking.execute((&tracking_id, &customer, &phone, polled_at))?;
                audit.execute((&tracking_id, &customer, &phone, polled_at))?;
            }
        }
        tx.commit()?;
    }
    Ok(started.elapsed().as_secs_f64())
}
