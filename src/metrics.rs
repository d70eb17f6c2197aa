//! Prometheus metrics after each cycle: the text exposition format, written atomically for node_exporter's
//! textfile collector (`--metrics-file`) and/or pushed to a Pushgateway (`--pushgateway`).
//!
//! Batch-job practice: gauges describe the last run; `dlr_poller_last_success_timestamp_seconds` moves only on
//! success and is carried in the database, so a failed run never erases it; counters come from running totals in
//! the database, so they only go up across runs.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};

use crate::exit::Exit;
use crate::store::MetricsData;
use crate::summary::Summary;
use crate::timefmt;

/// Every outcome a cycle can record, so each `dlr_poller_cycles_total` series exists from the first run.
const OUTCOMES: [Exit; 5] = [
    Exit::Ok,
    Exit::Partial,
    Exit::CarrierUnavailable,
    Exit::CredentialsRejected,
    Exit::Database,
];

struct Family<'a> {
    out: &'a mut String,
}

impl Family<'_> {
    fn header(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &str, value: f64) {
        if labels.is_empty() {
            let _ = writeln!(self.out, "{name} {}", number(value));
        } else {
            let _ = writeln!(self.out, "{name}{{{labels}}} {}", number(value));
        }
    }

    fn gauge(&mut self, name: &str, help: &str, value: f64) {
        self.header(name, "gauge", help);
        self.sample(name, "", value);
    }
}

fn number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

fn unix(t: DateTime<Utc>) -> f64 {
    t.timestamp_millis() as f64 / 1000.0
}

/// Renders the metrics of a finished cycle.
pub fn render(s: &Summary, budget: Duration, data: &MetricsData) -> String {
    let mut out = String::new();
    let mut f = Family { out: &mut out };
    last_run(&mut f, s, budget, data);
    totals(&mut f, data);
    closed_24h(&mut f, data);
    out
}

/// The gauges of the last cycle.
fn last_run(f: &mut Family, s: &Summary, budget: Duration, data: &MetricsData) {
    if let Some(at) = data.last_success {
        f.gauge(
            "dlr_poller_last_success_timestamp_seconds",
            "When a cycle last polled every due message (Unix time).",
            unix(at),
        );
    }
    let finished = s
        .finished_at
        .as_deref()
        .and_then(|t| timefmt::parse(t).ok());
    if let Some(at) = finished {
        f.gauge(
            "dlr_poller_last_run_timestamp_seconds",
            "When the last cycle ended (Unix time).",
            unix(at),
        );
    }
    let exit = s.exit_code.unwrap_or(u8::MAX);
    f.gauge(
        "dlr_poller_last_run_success",
        "1 if the last cycle polled every due message, else 0.",
        (exit == 0) as u8 as f64,
    );
    f.gauge(
        "dlr_poller_last_run_exit_code",
        "Exit code of the last cycle.",
        exit as f64,
    );
    f.header(
        "dlr_poller_last_run_outcome",
        "gauge",
        "Outcome of the last cycle: 1 for the outcome it had.",
    );
    for outcome in OUTCOMES.iter().map(|e| e.outcome()).chain(["interrupted"]) {
        f.sample(
            "dlr_poller_last_run_outcome",
            &format!("outcome=\"{outcome}\""),
            (s.outcome == outcome) as u8 as f64,
        );
    }
    f.gauge(
        "dlr_poller_last_run_duration_seconds",
        "Wall time of the last cycle.",
        s.duration_seconds,
    );
    f.gauge(
        "dlr_poller_cycle_budget_seconds",
        "The cycle's deadline (--deadline).",
        budget.as_secs_f64(),
    );
    f.gauge(
        "dlr_poller_last_run_messages_due",
        "Messages due in the last cycle.",
        s.messages_due as f64,
    );
    f.header(
        "dlr_poller_last_run_messages_polled",
        "gauge",
        "Messages polled in the last cycle, by status.",
    );
    for (status, n) in [
        ("delivered", s.delivered),
        ("failed", s.failed),
        ("pending", s.pending),
    ] {
        f.sample(
            "dlr_poller_last_run_messages_polled",
            &format!("status=\"{status}\""),
            n as f64,
        );
    }
    f.gauge(
        "dlr_poller_last_run_messages_not_polled",
        "Messages due in the last cycle that were neither polled nor closed (they stay due).",
        s.messages_due.saturating_sub(s.settled()) as f64,
    );
    f.gauge(
        "dlr_poller_last_run_messages_overdue",
        "Messages due that the last cycle left unpolled when it ended (they go first in the next).",
        s.overdue as f64,
    );
    f.gauge(
        "dlr_poller_last_run_lag_seconds",
        "How long the oldest message left due by the last cycle had been due when it ended (0: none left).",
        s.lag_seconds as f64,
    );
    f.gauge(
        "dlr_poller_last_run_bulk_fallbacks",
        "Jobs of the last cycle whose bulk question failed and whose messages were asked one by one.",
        s.bulk_fallbacks as f64,
    );
    f.gauge(
        "dlr_poller_last_run_messages_asked_alone",
        "Messages the last cycle asked about one by one because their bulk question failed or lacked them.",
        s.asked_alone as f64,
    );
    f.gauge(
        "dlr_poller_last_run_fallback_stopped",
        "1 if the last cycle stopped falling back to per-message questions (the carrier failed those too).",
        s.fallback_stopped as f64,
    );
    f.gauge(
        "dlr_poller_last_run_submissions_too_old",
        "New submissions the last cycle recorded as too old to track (first seen after 72h + --catch-up).",
        s.too_old as f64,
    );
    f.gauge(
        "dlr_poller_last_run_batches_failed",
        "Batches that failed in the last cycle.",
        s.batches_failed as f64,
    );
}

/// The running totals, as counters.
fn totals(f: &mut Family, data: &MetricsData) {
    let total = |name: &str| -> f64 {
        data.totals
            .iter()
            .find(|(n, _)| n == name)
            .map_or(0.0, |(_, v)| *v as f64)
    };

    f.header(
        "dlr_poller_messages_polled_total",
        "counter",
        "Poll results stored, by delivery status.",
    );
    for status in ["delivered", "failed", "pending"] {
        f.sample(
            "dlr_poller_messages_polled_total",
            &format!("status=\"{status}\""),
            total(&format!("messages_polled:{status}")),
        );
    }
    f.header(
        "dlr_poller_messages_failed_total",
        "counter",
        "FAILED poll results stored, by failure category.",
    );
    for category in crate::domain::Category::ALL {
        f.sample(
            "dlr_poller_messages_failed_total",
            &format!("category=\"{category}\""),
            total(&format!("messages_failed:{category}")),
        );
    }
    for (name, key, help) in [
        (
            "dlr_poller_messages_closed_unconfirmed_total",
            "messages_closed_unconfirmed:",
            "Messages still pending after 72 hours.",
        ),
        (
            "dlr_poller_messages_not_found_total",
            "messages_not_found:",
            "Polls the carrier answered with 404.",
        ),
        (
            "dlr_poller_unknown_statuses_total",
            "unknown_statuses:",
            "Carrier status words outside the mapping table.",
        ),
        (
            "dlr_poller_batches_failed_total",
            "batches_failed:",
            "Batches whose listing failed after retries.",
        ),
        (
            "dlr_poller_lookups_failed_total",
            "lookups_failed:",
            "One-by-one lookups that failed after retries.",
        ),
        (
            "dlr_poller_lookups_rejected_total",
            "lookups_rejected:",
            "Lookups the carrier refused for good (400, 410, 422, an answer about another message): stored as \
             that poll's result.",
        ),
        (
            "dlr_poller_messages_closed_unanswered_total",
            "messages_closed_unanswered:",
            "Messages closed after their +72h slot without an answer from the carrier.",
        ),
        (
            "dlr_poller_submissions_too_old_total",
            "submissions_too_old:",
            "Submissions first seen after 72h + --catch-up: recorded, never polled.",
        ),
        (
            "dlr_poller_http_requests_total",
            "http_requests:",
            "HTTP requests to the carrier.",
        ),
        (
            "dlr_poller_http_retries_total",
            "http_retries:",
            "HTTP requests that were retries.",
        ),
    ] {
        f.header(name, "counter", help);
        f.sample(name, "", total(key));
    }
    f.header(
        "dlr_poller_cycles_total",
        "counter",
        "Cycles run, by outcome.",
    );
    for outcome in OUTCOMES.iter().map(|e| e.outcome()).chain(["interrupted"]) {
        f.sample(
            "dlr_poller_cycles_total",
            &format!("outcome=\"{outcome}\""),
            total(&format!("cycles:{outcome}")),
        );
    }
}

/// What became of the messages whose tracking ended in the last 24 hours.
fn closed_24h(f: &mut Family, data: &MetricsData) {
    f.header(
        "dlr_poller_messages_closed_24h",
        "gauge",
        "Messages whose tracking ended in the last 24 hours, by final state.",
    );
    let closed = |state: &str| {
        data.closed_24h
            .iter()
            .find(|(s, _)| s == state)
            .map_or(0, |(_, n)| *n)
    };
    for state in ["DELIVERED", "FAILED", "UNCONFIRMED"] {
        f.sample(
            "dlr_poller_messages_closed_24h",
            &format!("state=\"{}\"", state.to_ascii_lowercase()),
            closed(state) as f64,
        );
    }
    let all = closed("DELIVERED") + closed("FAILED") + closed("UNCONFIRMED");
    if all > 0 {
        f.gauge(
            "dlr_poller_delivery_rate_24h_ratio",
            "Delivered share of the messages whose tracking ended in the last 24 hours.",
            closed("DELIVERED") as f64 / all as f64,
        );
    }
}

/// Writes `text` to `path` atomically: a temporary file in the same directory, then a rename, so a scraper never
/// reads half a file.
pub fn write_file(path: &Path, text: &str) -> Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .context("--metrics-file has no file name")?
        .to_string_lossy();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write()
        .inspect_err(|_| {
            let _ = std::fs::remove_file(&tmp);
        })
        .with_context(|| format!("writing --metrics-file {}", path.display()))
}

/// Pushes `text` to a Pushgateway under the grouping key `job="dlr_poller"` (no instance label: a CronJob's pod
/// changes every run), replacing the group's previous metrics.
/// The `replica` label: `given` (checked), or the host name with anything but letters, digits, `.`, `_` and `-`
/// replaced by `_`.
pub fn replica(given: Option<&str>) -> Result<String> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    match given {
        Some(name) if !name.is_empty() && name.len() <= 64 && name.chars().all(allowed) => {
            Ok(name.to_string())
        }
        Some(name) => anyhow::bail!(
            "invalid --replica (env DLR_POLLER_REPLICA) {name:?}: expected 1-64 letters, digits, '.', '_' or '-'"
        ),
        None => {
            let host = crate::host::name();
            let host: String = host
                .trim()
                .chars()
                .take(64)
                .map(|c| if allowed(c) { c } else { '_' })
                .collect();
            Ok(if host.is_empty() {
                "unknown".into()
            } else {
                host
            })
        }
    }
}

/// Pushes `text` to the Pushgateway's group of this job and replica (PUT: it replaces only that group).
pub fn push(gateway: &str, replica: &str, text: &str) -> Result<()> {
    let url = format!(
        "{}/metrics/job/dlr_poller/replica/{replica}",
        gateway.trim_end_matches('/')
    );
    // The gateway's own credentials (`https://user:password@...`) are not repeated in errors.
    let shown = crate::redact::url(&url);
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(10)))
        .http_status_as_error(false)
        .build()
        .into();
    let response = agent
        .put(&url)
        .header("Content-Type", "text/plain; version=0.0.4")
        .send(text)
        .with_context(|| format!("pushing metrics to {shown}"))?;
    let status = response.status().as_u16();
    anyhow::ensure!(
        (200..300).contains(&status),
        "pushing metrics to {shown}: HTTP {status}"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replica_is_named_for_its_own_pushgateway_group() {
        assert_eq!(replica(Some("poller-0")).unwrap(), "poller-0");
        assert_eq!(replica(Some("dlr.poller_7")).unwrap(), "dlr.poller_7");
        for bad in ["", "a/b", "x y", "../up", &"n".repeat(65)] {
            let e = replica(Some(bad)).unwrap_err();
            assert!(format!("{e}").contains("DLR_POLLER_REPLICA"), "{e}");
        }
        let host = replica(None).unwrap();
        assert!(
            !host.is_empty()
                && host
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || ".-_".contains(c))
        );
    }

    fn summary() -> Summary {
        Summary {
            cycle_id: 3,
            finished_at: Some("2025-12-01T11:00:10.500Z".into()),
            duration_seconds: 10.5,
            outcome: "partial".into(),
            exit_code: Some(75),
            messages_due: 10,
            polled: 8,
            delivered: 5,
            failed: 1,
            pending: 2,
            batches_failed: 1,
            ..Summary::default()
        }
    }

    #[test]
    fn renders_gauges_counters_and_the_delivery_rate() {
        let data = MetricsData {
            totals: vec![
                ("messages_polled:delivered".into(), 40),
                ("cycles:ok".into(), 7),
                ("http_requests:".into(), 99),
            ],
            last_success: Some(timefmt::parse("2025-12-01T09:00:00Z").unwrap()),
            closed_24h: vec![("DELIVERED".into(), 19), ("FAILED".into(), 1)],
        };
        let text = render(&summary(), Duration::from_secs(840), &data);
        for line in [
            "dlr_poller_last_success_timestamp_seconds 1764579600",
            "dlr_poller_last_run_timestamp_seconds 1764586810.5",
            "dlr_poller_last_run_success 0",
            "dlr_poller_last_run_exit_code 75",
            "dlr_poller_last_run_outcome{outcome=\"partial\"} 1",
            "dlr_poller_last_run_outcome{outcome=\"ok\"} 0",
            "dlr_poller_cycle_budget_seconds 840",
            "dlr_poller_last_run_messages_polled{status=\"pending\"} 2",
            "dlr_poller_last_run_messages_not_polled 2",
            "dlr_poller_messages_polled_total{status=\"delivered\"} 40",
            "dlr_poller_messages_polled_total{status=\"failed\"} 0",
            "dlr_poller_http_requests_total 99",
            "dlr_poller_cycles_total{outcome=\"ok\"} 7",
            "dlr_poller_cycles_total{outcome=\"interrupted\"} 0",
            "dlr_poller_messages_closed_24h{state=\"unconfirmed\"} 0",
            "dlr_poller_delivery_rate_24h_ratio 0.95",
            "# TYPE dlr_poller_http_retries_total counter",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
    }

    #[test]
    fn no_success_yet_and_no_closures_leave_those_series_out() {
        let text = render(
            &summary(),
            Duration::from_secs(840),
            &MetricsData::default(),
        );
        assert!(!text.contains("dlr_poller_last_success_timestamp_seconds"));
        assert!(!text.contains("dlr_poller_delivery_rate_24h_ratio"));
    }

    #[test]
    fn the_file_is_replaced_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dlr_poller.prom");
        write_file(&path, "a 1\n").unwrap();
        write_file(&path, "b 2\n").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "b 2\n");
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temporary file left behind"
        );
        let err = write_file(&dir.path().join("missing/x.prom"), "").unwrap_err();
        assert!(format!("{err:#}").contains("writing --metrics-file"));
    }
}
