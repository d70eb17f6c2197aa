//! Operations through the real binary: the metrics file and the Pushgateway, `check`, `doctor`, JSON logs and
//! `prune`.

mod common;

use common::{Backend, wire};
use mockito::Matcher;

const SUBMITTED: &str = "2025-12-01T09:00:00Z";
const NOW: &str = "2025-12-01T11:00:00Z";

on_both_backends!(
    metrics_file_tracks_successes_failures_and_totals,
    delivery_rate_of_the_last_24_hours,
    metrics_are_pushed_and_a_failed_push_is_only_a_warning,
    check_follows_the_nagios_convention,
    doctor_checks_everything_and_writes_nothing,
    json_logs_carry_the_cycle_id,
    the_cycle_says_where_its_time_went,
    prune_deletes_only_old_rows_of_finished_messages,
);

/// Parses the text exposition format into (series, value), failing on any malformed line.
fn scrape(text: &str) -> Vec<(String, f64)> {
    let mut samples = Vec::new();
    for line in text.lines() {
        if line.starts_with("# HELP ") || line.starts_with("# TYPE ") {
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("malformed line {line:?}"));
        assert!(series.starts_with("dlr_poller_"), "{line}");
        samples.push((
            series.to_string(),
            value
                .parse()
                .unwrap_or_else(|_| panic!("bad value in {line:?}")),
        ));
    }
    samples
}

fn value(samples: &[(String, f64)], series: &str) -> Option<f64> {
    samples.iter().find(|(s, _)| s == series).map(|(_, v)| *v)
}

fn carrier(answer: &str) -> (mockito::ServerGuard, mockito::Mock) {
    let mut server = mockito::Server::new();
    let mock = server
        .mock("GET", Matcher::Regex("^/messages/".into()))
        .with_body_from_request({
            let answer = answer.to_string();
            move |req| {
                wire(req.path().rsplit('/').next().unwrap(), &answer)
                    .to_string()
                    .into_bytes()
            }
        })
        .expect_at_least(1)
        .create();
    (server, mock)
}

fn metrics_file_tracks_successes_failures_and_totals(backend: Backend) {
    let db = backend.db();
    db.submit("T1", None, SUBMITTED);
    db.submit("T2", None, SUBMITTED);
    let file = db.dir.path().join("dlr_poller.prom");
    let metrics_file = file.to_str().unwrap();
    let (server, _m) = carrier("SENT");
    let run = db.poll_json(&server.url(), NOW, &["--metrics-file", metrics_file]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let first = scrape(&std::fs::read_to_string(&file).unwrap());
    let success =
        value(&first, "dlr_poller_last_success_timestamp_seconds").expect("success recorded");
    assert_eq!(value(&first, "dlr_poller_last_run_success"), Some(1.0));
    assert_eq!(
        value(
            &first,
            "dlr_poller_messages_polled_total{status=\"pending\"}"
        ),
        Some(2.0)
    );
    assert_eq!(
        value(&first, "dlr_poller_cycles_total{outcome=\"ok\"}"),
        Some(1.0)
    );
    assert_eq!(
        value(&first, "dlr_poller_cycle_budget_seconds"),
        Some(840.0)
    );

    // A failing run two hours later: the last success stays, the run is marked failed, counters keep counting.
    let run = db.poll_json(
        "http://127.0.0.1:9",
        "2025-12-01T13:00:00Z",
        &["--metrics-file", metrics_file, "--max-attempts", "1"],
    );
    assert_eq!(run.code, Some(69), "{}", run.stderr);
    let second = scrape(&std::fs::read_to_string(&file).unwrap());
    assert_eq!(
        value(&second, "dlr_poller_last_success_timestamp_seconds"),
        Some(success)
    );
    assert_eq!(value(&second, "dlr_poller_last_run_success"), Some(0.0));
    assert_eq!(value(&second, "dlr_poller_last_run_exit_code"), Some(69.0));
    assert_eq!(
        value(
            &second,
            "dlr_poller_last_run_outcome{outcome=\"carrier_unavailable\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &second,
            "dlr_poller_messages_polled_total{status=\"pending\"}"
        ),
        Some(2.0)
    );
    assert_eq!(
        value(
            &second,
            "dlr_poller_cycles_total{outcome=\"carrier_unavailable\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        value(&second, "dlr_poller_http_requests_total"),
        Some(4.0),
        "2 lookups then 2 refused"
    );
    assert_eq!(
        value(&second, "dlr_poller_last_run_messages_not_polled"),
        Some(2.0)
    );
}

fn delivery_rate_of_the_last_24_hours(backend: Backend) {
    let db = backend.db();
    for i in 0..19 {
        db.submit(&format!("D{i}"), None, SUBMITTED);
    }
    db.submit("F1", None, SUBMITTED);
    let mut server = mockito::Server::new();
    let _d = server
        .mock("GET", Matcher::Regex("^/messages/D".into()))
        .with_body_from_request(|req| {
            wire(req.path().rsplit('/').next().unwrap(), "DELIVERED")
                .to_string()
                .into_bytes()
        })
        .expect(19)
        .create();
    let _f = server
        .mock("GET", "/messages/F1")
        .with_body(wire("F1", "REJECTED").to_string())
        .create();
    let file = db.dir.path().join("m.prom");
    let run = db.poll_json(
        &server.url(),
        NOW,
        &["--metrics-file", file.to_str().unwrap()],
    );
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let samples = scrape(&std::fs::read_to_string(&file).unwrap());
    assert_eq!(
        value(&samples, "dlr_poller_delivery_rate_24h_ratio"),
        Some(0.95)
    );
    assert_eq!(
        value(&samples, "dlr_poller_messages_closed_24h{state=\"failed\"}"),
        Some(1.0)
    );
}

fn metrics_are_pushed_and_a_failed_push_is_only_a_warning(backend: Backend) {
    let db = backend.db();
    db.submit("T1", None, SUBMITTED);
    let (server, _m) = carrier("DELIVERED");
    let mut gateway = mockito::Server::new();
    // Each replica pushes to a group of its own: by default its host name, or --replica.
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let pushed = gateway
        .mock(
            "PUT",
            format!("/metrics/job/dlr_poller/replica/{}", host.trim()).as_str(),
        )
        .match_body(Matcher::Regex("dlr_poller_last_run_success 1\n".into()))
        .expect(1)
        .create();
    let run = db.poll_json(&server.url(), NOW, &["--pushgateway", &gateway.url()]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    pushed.assert();

    db.submit("T2", None, SUBMITTED);
    let broken = gateway
        .mock("PUT", "/metrics/job/dlr_poller/replica/poller-2")
        .with_status(500)
        .expect(1)
        .create();
    let run = db.poll_json(
        &server.url(),
        "2025-12-01T13:00:00Z",
        &["--pushgateway", &gateway.url(), "--replica", "poller-2"],
    );
    broken.assert();
    assert_eq!(
        run.code,
        Some(0),
        "a failed push does not fail the cycle: {}",
        run.stderr
    );
    assert!(
        run.stderr.contains("pushing metrics to") && run.stderr.contains("HTTP 500"),
        "{}",
        run.stderr
    );
}

fn check_follows_the_nagios_convention(backend: Backend) {
    let db = backend.db();
    let check = |now: &str| {
        let out = db.cmd().args(["check", "--now", now]).output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).trim().to_string(),
        )
    };
    let (code, line) = check(NOW);
    assert_eq!(
        (code, line.as_str()),
        (Some(2), "CRITICAL: no cycle has run yet")
    );

    db.submit("T1", None, SUBMITTED);
    let (server, _m) = carrier("SENT");
    assert_eq!(db.poll_json(&server.url(), NOW, &[]).code, Some(0));
    // `check` judges by the wall clock of the runs: judge ten minutes after this one ended.
    let out = db.cmd().args(["cycles", "--json"]).output().unwrap();
    let cycles: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let finished = cycles[0]["finished_at"].as_str().unwrap().to_string();
    let ran_at = dlr_poller::timefmt::parse(&finished).unwrap() + chrono::TimeDelta::minutes(10);
    let (code, line) = check(&dlr_poller::timefmt::format_millis(ran_at));
    assert_eq!(code, Some(0), "{line}");
    assert!(
        line.starts_with("OK: last cycle 1 ok, 1 messages polled; last success 10m ago"),
        "{line}"
    );

    let run = db.poll_json(
        "http://127.0.0.1:9",
        "2025-12-01T13:00:00Z",
        &["--max-attempts", "1"],
    );
    assert_eq!(run.code, Some(69));
    let (code, line) = check(&dlr_poller::timefmt::format_millis(ran_at));
    assert_eq!(code, Some(1), "{line}");
    assert!(
        line.starts_with("WARNING: last cycle 2 ended carrier_unavailable (exit 69)"),
        "{line}"
    );

    let (code, line) = check(&dlr_poller::timefmt::format(
        ran_at + chrono::TimeDelta::hours(6),
    ));
    assert_eq!(code, Some(2), "{line}");
    assert!(
        line.starts_with("CRITICAL: no successful cycle within 5h: last success 6h"),
        "{line}"
    );

    let out = db
        .cmd()
        .args([
            "check",
            "--max-age",
            "8h",
            "--now",
            &dlr_poller::timefmt::format(ran_at + chrono::TimeDelta::hours(6)),
        ])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "a longer --max-age tolerates it"
    );

    let dir = tempfile::tempdir().unwrap();
    let out = common::bin()
        .arg("--db")
        .arg(dir.path().join("absent.db"))
        .arg("check")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("UNKNOWN: opening database"));
}

fn doctor_checks_everything_and_writes_nothing(backend: Backend) {
    let db = backend.db();
    db.submit("T1", None, SUBMITTED);
    let mut server = mockito::Server::new();
    let probe = server
        .mock("GET", "/messages/dlr-poller-doctor-probe")
        .with_status(404)
        .expect(1)
        .create();
    let out = db
        .cmd()
        .env("DLR_CARRIER_TOKEN", common::TOKEN)
        .args(["doctor", "--carrier-url", &server.url()])
        .output()
        .unwrap();
    probe.assert();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        text.contains("ok: database") && text.contains("1 submissions"),
        "{text}"
    );
    assert!(
        text.contains("ok: carrier answered an authenticated request"),
        "{text}"
    );
    for table in [
        "message_tracking",
        "poll_cycles",
        "sms_delivery_confirmations",
        "poller_lease",
    ] {
        assert_eq!(
            db.count(&format!("SELECT COUNT(*) FROM {table}")),
            0,
            "{table} untouched"
        );
    }

    let rejected = server
        .mock("GET", "/messages/dlr-poller-doctor-probe")
        .with_status(401)
        .create();
    let out = db
        .cmd()
        .env("DLR_CARRIER_TOKEN", "wrong")
        .args(["doctor", "--carrier-url", &server.url()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(77));
    rejected.assert();
    let out = db
        .cmd()
        .env("DLR_CARRIER_TOKEN", "x")
        .args([
            "doctor",
            "--carrier-url",
            "http://127.0.0.1:9",
            "--max-attempts",
            "1",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(69));
    let out = db
        .cmd()
        .args(["doctor", "--carrier-url", "http://127.0.0.1:9"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78), "no token");
}

/// `--json` and the `-v` log break the cycle's time down by phase: every phase is named, and the carrier's share holds at least the time the carrier took to answer.
fn the_cycle_says_where_its_time_went(backend: Backend) {
    let db = backend.db();
    for i in 0..4 {
        db.submit(&format!("T{i}"), None, SUBMITTED);
    }
    let mut server = mockito::Server::new();
    let _m = server
        .mock("GET", Matcher::Regex("^/messages/".into()))
        .with_body_from_request(|req| {
            std::thread::sleep(std::time::Duration::from_millis(100));
            wire(req.path().rsplit('/').next().unwrap(), "DELIVERED")
                .to_string()
                .into_bytes()
        })
        .expect(4)
        .create();
    let out = db
        .poll(&server.url(), NOW)
        .args(["-v", "--json", "--concurrency", "1"])
        .output()
        .unwrap();
    let run = common::Run::from(out);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let phases = run.summary["phases"]
        .as_object()
        .unwrap_or_else(|| panic!("no phases: {}", run.summary));
    let mut names: Vec<&str> = phases.keys().map(String::as_str).collect();
    names.sort_unstable();
    let mut want = [
        "read_submissions",
        "take_in",
        "rounds",
        "read_due",
        "ask_carrier",
        "write_results",
        "update_tracking",
        "commit",
        "writer_idle",
    ];
    want.sort_unstable();
    assert_eq!(names, want);
    let seconds = |name: &str| phases[name].as_f64().unwrap();
    // Four answers of 100 ms each, one after the other.
    assert!(seconds("ask_carrier") >= 0.4, "{phases:?}");
    for name in ["read_submissions", "write_results", "commit"] {
        assert!(seconds(name) > 0.0, "{name}: {phases:?}");
    }
    if backend == Backend::Postgres {
        assert!(seconds("rounds") > 0.0, "{phases:?}");
    }
    run.assert_stderr_has("time by phase in ");
    run.assert_stderr_has("ask_carrier ");
}

fn json_logs_carry_the_cycle_id(backend: Backend) {
    let db = backend.db();
    db.submit("T1", None, SUBMITTED);
    let (server, _m) = carrier("ACCEPTD");
    let run = db.poll_json(&server.url(), NOW, &["--log-format", "json"]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let lines: Vec<serde_json::Value> = run
        .stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(lines.len() >= 3);
    for line in &lines {
        assert!(
            line["timestamp"].is_string()
                && line["level"].is_string()
                && line["message"].is_string(),
            "{line}"
        );
    }
    let warning = lines
        .iter()
        .find(|l| l["level"] == "WARN")
        .expect("the unknown word is a warning");
    assert_eq!(warning["cycle_id"], 1);
    assert!(
        lines.last().unwrap()["message"]
            .as_str()
            .unwrap()
            .starts_with("cycle 1 ok")
    );

    let out = db
        .cmd()
        .env("DLR_POLLER_LOG_FORMAT", "json")
        .args(["history", "nope"])
        .output()
        .unwrap();
    let err: serde_json::Value = serde_json::from_slice(&out.stderr).unwrap();
    assert_eq!(err["level"], "ERROR");
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .contains("no message with tracking id")
    );
}

fn prune_deletes_only_old_rows_of_finished_messages(backend: Backend) {
    let db = backend.db();
    db.submit("OLD", None, SUBMITTED);
    db.submit("OPEN", None, "2026-03-01T09:00:00Z");
    let (server, _m) = carrier("SENT");
    for now in ["2025-12-01T11:00:00Z", "2025-12-04T09:00:00Z"] {
        assert_eq!(db.poll_json(&server.url(), now, &[]).code, Some(0));
    }
    assert_eq!(db.tracking("OLD").unwrap().state, "UNCONFIRMED");
    assert_eq!(
        db.poll_json(&server.url(), "2026-03-01T11:00:00Z", &[])
            .code,
        Some(0)
    );
    assert_eq!(
        db.count("SELECT COUNT(*) FROM sms_delivery_confirmations"),
        3
    );

    let prune = |args: &[&str]| {
        let out = db.cmd().arg("prune").args(args).output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).trim().to_string(),
        )
    };
    let (code, line) = prune(&[
        "--older-than",
        "30d",
        "--now",
        "2026-03-02T00:00:00Z",
        "--dry-run",
    ]);
    assert_eq!(code, Some(0));
    assert!(
        line.starts_with(
            "would delete 2 audit rows polled before 2026-01-31T00:00:00Z and 0 cycle records"
        ),
        "{line}"
    );
    assert_eq!(
        db.count("SELECT COUNT(*) FROM sms_delivery_confirmations"),
        3,
        "dry run deletes nothing"
    );

    // A clock in the future is refused unless meant: it would delete recent rows.
    let (code, _) = prune(&["--older-than", "30d", "--now", "2099-01-01T00:00:00Z"]);
    assert_eq!(code, Some(78));
    assert_eq!(
        db.count("SELECT COUNT(*) FROM sms_delivery_confirmations"),
        3,
        "a refused prune deletes nothing"
    );
    // Cycle records go by their wall-clock start; with a cutoff in the future of the runs, they all go.
    let (code, line) = prune(&[
        "--older-than",
        "30d",
        "--now",
        "2099-01-01T00:00:00Z",
        "--allow-future-now",
    ]);
    assert_eq!(code, Some(0));
    assert!(
        line.starts_with("deleted 2 audit rows") && line.contains("and 3 cycle records"),
        "{line}"
    );
    assert_eq!(
        db.audit("OPEN").len(),
        1,
        "results of a message still tracked are kept"
    );
    assert!(db.audit("OLD").is_empty());

    let (code, _) = prune(&["--older-than", "1h"]);
    assert_eq!(code, Some(78), "a cutoff under a day is refused");
}
