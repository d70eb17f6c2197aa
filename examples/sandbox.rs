//! The sandbox carrier on its own, for trying the poller by hand or profiling it:
//! `cargo run --release --example sandbox -- --port 8080 --messages 100000 --batch-size 500 --latency-ms 20`.
//! `--carrier NAME` makes it speak that provider's API (twilio, vonage, sinch, infobip, telnyx).
//!
//! Serves a world of messages that all stay SENT (see `World::uniform`), submitted at 2025-12-01T09:00:00Z, with
//! the token `sandbox-token`, until killed. `--database PATH` also writes the submissions into a migrated
//! dlr-poller database.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use dlr_poller::{schedule, timefmt};
use dlr_sandbox::{Dialect, Sandbox, SandboxServer, World};

fn main() -> Result<()> {
    let (mut port, mut messages, mut batch_size, mut latency_ms, mut database) =
        (8080u16, 1000usize, 500usize, 0u64, None);
    let mut dialect = Dialect::Generic;
    let args: Vec<String> = std::env::args().skip(1).collect();
    for pair in args.chunks(2) {
        let [flag, value] = pair else {
            bail!("expected --flag value pairs")
        };
        match flag.as_str() {
            "--port" => port = value.parse()?,
            "--messages" => messages = value.parse()?,
            "--batch-size" => batch_size = value.parse()?,
            "--latency-ms" => latency_ms = value.parse()?,
            "--database" => database = Some(value.clone()),
            "--carrier" => {
                dialect =
                    Dialect::parse(value).with_context(|| format!("unknown --carrier {value:?}"))?
            }
            other => bail!("unknown option {other}"),
        }
    }
    let start = timefmt::parse("2025-12-01T09:00:00Z")?;
    let world = match dialect {
        Dialect::Generic => World::uniform(messages, batch_size, start),
        dialect => World::uniform_for(dialect, messages, batch_size, start),
    };
    if let Some(path) = database {
        let mut conn =
            rusqlite::Connection::open(&path).with_context(|| format!("opening {path}"))?;
        world
            .write_submissions(&mut conn)
            .context("writing submissions (run `dlr-poller migrate` on the database first)")?;
    }
    let now = schedule::first_due(start);
    let sandbox = Sandbox::new(world, "sandbox-token", now)
        .with_page_size(batch_size.max(100))
        .with_dialect(dialect);
    sandbox.faults(|f| f.latency = Duration::from_millis(latency_ms));
    let server = SandboxServer::start(Arc::new(sandbox), port)?;
    let account = dialect
        .account()
        .map(|a| format!(" --carrier-account {a}"))
        .unwrap_or_default();
    eprintln!(
        "sandbox carrier at {} ({messages} messages, clock {}); poll with DLR_CARRIER_TOKEN=sandbox-token --now {} \
         --carrier {}{account}",
        server.url(),
        timefmt::format(now),
        timefmt::format(now),
        dialect.name()
    );
    loop {
        std::thread::park();
    }
}
