"""Checks crontab.example with a crontab parser: one valid job every two hours on the hour, running
`dlr-poller poll` with its output redirected to a log, the environment the job needs, and no token in it. A
commented-out alternative (a shorter cadence) must be a valid job running the same command."""
import sys

from crontab import CronTab

path = sys.argv[1] if len(sys.argv) > 1 else "crontab.example"
tab = CronTab(tabfile=path)
jobs = [job for job in tab if job.is_enabled()]
alternatives = [job for job in tab if not job.is_enabled()]
problems = []
for job in alternatives:
    if not job.is_valid() or "dlr-poller poll" not in job.command or "flock -n" not in job.command:
        problems.append(f"the commented-out alternative is not a valid flock-guarded poll: {job}")
if len(jobs) != 1:
    problems.append(f"expected one job, found {len(jobs)}")
for job in jobs:
    if not job.is_valid():
        problems.append(f"invalid job: {job}")
    if str(job.slices) != "0 */2 * * *":
        problems.append(f"schedule is {job.slices}, not every two hours on the hour")
    if "dlr-poller poll" not in job.command:
        problems.append("the job does not run `dlr-poller poll`")
    if ">>" not in job.command or "2>&1" not in job.command:
        problems.append("the job's output is not appended to a log file")
for var in ("DLR_POLLER_DB", "DLR_CARRIER_URL", "DLR_CARRIER_TOKEN_FILE", "PATH"):
    if var not in tab.env:
        problems.append(f"{var} is not set")
if "DLR_CARRIER_TOKEN" in tab.env:
    problems.append("the token itself must not be in the crontab")
for problem in problems:
    print(f"{path}: {problem}")
if problems:
    sys.exit(1)
print(f"{path}: ok ({jobs[0].slices} {jobs[0].command})")
