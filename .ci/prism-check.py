#!/usr/bin/env python3
"""Checks each carrier profile against the provider's own API description, served by Stoplight Prism.

For every provider: start `prism mock DESCRIPTION` on loopback, run `dlr-poller doctor` and one `dlr-poller poll`
cycle with that profile against it, and fail when a run exits badly or Prism reports a request that breaks the
description (a path, parameter or auth scheme it does not document: Prism answers those with 401 or 422 and logs
them).

Usage: prism-check.py PRISM_BIN DLR_POLLER_BIN SPECS_DIR
"""

import json
import os
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone

TOKEN = "prism-check-token"
NOW = datetime.now(timezone.utc).replace(microsecond=0)
SUBMITTED = NOW - timedelta(hours=2, minutes=1)

# provider: (description, account, submissions as (tracking id, batch id, phone)). Batches and lone messages
# both, so that every kind of request a profile makes is checked.
PROVIDERS = {
    "twilio": (
        "twilio.api_v2010.json",
        "AC0123456789abcdef0123456789abcdef",
        [
            ("SM0123456789abcdef0123456789abcd01", "B1", "+15005550001"),
            ("SM0123456789abcdef0123456789abcd02", "B1", "+15005550002"),
            ("SM0123456789abcdef0123456789abcd03", None, "+15005550003"),
        ],
    ),
    "vonage": (
        "vonage.reports.yml",
        "abcdef01",
        [
            ("aaaaaaaa-bbbb-cccc-dddd-0123456789a1", "B1", "447700900001"),
            ("aaaaaaaa-bbbb-cccc-dddd-0123456789a2", "B1", "447700900002"),
            ("aaaaaaaa-bbbb-cccc-dddd-0123456789a3", None, "447700900003"),
        ],
    ),
    "sinch": (
        "sinch.sms.third-party-2021.yaml",
        "jd63jf88477ll",
        [
            ("T1", "01FC66621VHDBN119Z8PMV1QPQ", "+44231235674"),
            ("T2", "01FC66621VHDBN119Z8PMV1QPQ", "44231235675"),
        ],
    ),
    "infobip": (
        "infobip.sms.openapi.json",
        None,
        [
            ("MESSAGE-ID-123-xyz", "BULK-ID-123-xyz", "41793026727"),
            ("12db39c3-7822-4e72-a3ec-c87442c0ffc5", "BULK-ID-123-xyz", "41793026834"),
            ("ib-lone-1", None, "41793026835"),
            ("ib-lone-2", None, "41793026836"),
        ],
    ),
    "telnyx": (
        "telnyx.spec3.yml",
        None,
        [
            ("40385f64-5717-4562-b3fc-2c963f66afa6", None, "+18665550001"),
            ("40385f64-5717-4562-b3fc-2c963f66afa7", "B1", "+18665550002"),
        ],
    ),
}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(port, prism, limit=90):
    until = time.time() + limit
    while time.time() < until:
        if prism.poll() is not None:
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return True
        except OSError:
            time.sleep(0.3)
    return False


def run(cmd, env):
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)


def check(prism_bin, poller, specs, provider):
    spec, account, submissions = PROVIDERS[provider]
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        log_path = os.path.join(tmp, "prism.log")
        with open(log_path, "w") as log:
            prism = subprocess.Popen(
                [prism_bin, "mock", os.path.join(specs, spec), "-p", str(port), "-h", "127.0.0.1"],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            if not wait_for(port, prism):
                print(open(log_path).read()[-3000:])
                return f"{provider}: Prism did not start"
            db = os.path.join(tmp, "poller.db")
            env = {"PATH": os.environ.get("PATH", ""), "DLR_CARRIER_TOKEN": TOKEN}
            out = run([poller, "--db", db, "migrate"], env)
            if out.returncode != 0:
                return f"{provider}: migrate failed: {out.stderr}"
            conn = sqlite3.connect(db)
            stamp = SUBMITTED.strftime("%Y-%m-%dT%H:%M:%SZ")
            conn.executemany(
                "INSERT INTO sms_submissions VALUES (?, 'C1', ?, ?, ?)",
                [(t, phone, batch, stamp) for (t, batch, phone) in submissions],
            )
            conn.commit()
            conn.close()
            profile = ["--carrier", provider, "--carrier-url", f"http://127.0.0.1:{port}"]
            if account:
                profile += ["--carrier-account", account]
            doctor = run([poller, "--db", db, "doctor", *profile], env)
            poll = run(
                [poller, "--db", db, "poll", "--json", "--max-attempts", "2", *profile, "--now",
                 NOW.strftime("%Y-%m-%dT%H:%M:%SZ")],
                env,
            )
            summary = json.loads(poll.stdout or "null") or {}
        finally:
            prism.terminate()
            prism.wait(timeout=30)
        log = open(log_path).read()
    served = log.count("[HTTP SERVER] get ")
    # Prism also logs where its own examples break the description's response schemas: not the poller's doing.
    # What counts is a request it refused: one that broke the description (422) or its auth scheme (401).
    marks = ("Request did not pass the validation rules", "Request terminated with error", "Invalid security")
    broken = [line for line in log.splitlines() if any(m in line for m in marks)]
    problems = []
    if doctor.returncode != 0:
        problems.append(f"doctor exited {doctor.returncode}: {doctor.stdout}{doctor.stderr[-1500:]}")
    if poll.returncode != 0:
        problems.append(f"poll exited {poll.returncode}: {poll.stderr[-3000:]}")
    if summary.get("polled", 0) + summary.get("closed_unanswered", 0) != len(submissions):
        problems.append(f"poll settled fewer than {len(submissions)} messages: {summary}")
    if broken:
        problems.append("requests that break the description:\n  " + "\n  ".join(broken[:10]))
    print(
        f"{provider}: doctor {doctor.returncode}, poll {poll.returncode}, {served} requests served, "
        f"{len(broken)} rejected; polled {summary.get('polled')}, refused {summary.get('lookups_rejected')}"
    )
    return f"{provider}: " + "; ".join(problems) if problems else None


def main():
    prism_bin, poller, specs = sys.argv[1:4]
    failures = [f for f in (check(prism_bin, poller, specs, p) for p in PROVIDERS) if f]
    for failure in failures:
        print("FAILED " + failure)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
