"""Signals at random moments of `probe check`, `probe trace` and `probe batch`, and what each run
must leave behind.

One `cycle` starts a probe in the lab's client namespace, waits a random time (choosing the
moment of the fault is the point of the wait), sends SIGINT, SIGTERM or SIGKILL, and checks the
run's end and the guard tables. Used by tests/e2e/test_hardening_e2e.py (a few cycles in CI)
and bench/faults.py (as many as asked, 50 or more).
"""

from __future__ import annotations

import atexit
import random
import tempfile
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

from e2ekit import BLACKHOLE_ADDR, BLACKHOLE_ADDR6, finish, guard_tables, probe_args, reap, start_probe

from netns.lab import ABORT_PORT, CLOSED_PORT, HTTP_PORT, Lab

def _trace(lab: Lab) -> list[str]:
    """`probe trace` of the clean server: a check, then five TTLs of fresh connections, each with
    its guard (about 5 s)."""
    return ["trace", *probe_args(lab.server_addr, HTTP_PORT)[1:]]


def _batch(lab: Lab) -> list[str]:
    """`probe batch` of twelve targets (clean, closed, aborting, unanswered), one guard table
    with a set of flows."""
    listing = Path(tempfile.mkstemp(prefix="probe-faults-", suffix=".txt")[1])
    atexit.register(listing.unlink, missing_ok=True)
    lines = [f"http://www.example.com:{port}/ www.example.com:{port}:{lab.server_addr}"
             for port in (HTTP_PORT, CLOSED_PORT, ABORT_PORT)] * 3
    lines += [f"http://www.example.com/ www.example.com:80:{BLACKHOLE_ADDR}"] * 3
    listing.write_text("\n".join(lines) + "\n")
    return ["batch", str(listing), "--syn-retries", "3"]


TARGETS = {
    "clean": lambda lab: probe_args(lab.server_addr, HTTP_PORT),
    "closed-port": lambda lab: probe_args(lab.server_addr, CLOSED_PORT),  # a reset, then the TTL sweeps
    "blackholed": lambda lab: probe_args(BLACKHOLE_ADDR, HTTP_PORT, "/", "--syn-retries", "3"),
    "trace": _trace,
    "batch": _batch,
    # the same over IPv6 (issue 15): the guard's rule is an ip6 one in the same inet table
    "clean-ipv6": lambda lab: probe_args(lab.server_addr6, HTTP_PORT),
    "closed-port-ipv6": lambda lab: probe_args(lab.server_addr6, CLOSED_PORT),
    "blackholed-ipv6": lambda lab: probe_args(BLACKHOLE_ADDR6, HTTP_PORT, "/", "--syn-retries", "3"),
}
LATEST_SIGNAL = {"trace": 6.0, "batch": 5.0}  # seconds; the others use the cycle's max_delay
SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGKILL)
VERDICT_CODES = {0, 3, 4}  # the run ended on its own before the signal: a verdict
MESSAGES = {signal.SIGINT: "probe: interrupted", signal.SIGTERM: "probe: terminated"}
FINISH_TIMEOUT = 20.0


@dataclass
class Faults:
    """What a series of cycles saw; `stale`: tables of killed runs that no later run has swept yet."""

    runs: int = 0
    signalled: dict = field(default_factory=dict)  # (signal name, "before"/"mid"/"after") -> count
    by_command: dict = field(default_factory=dict)  # "check"/"check over IPv6"/"trace"/"batch" -> runs
    stale: set = field(default_factory=set)
    problems: list = field(default_factory=list)


def _guard_started(stderr: str) -> bool:
    """The probe prints its "probing ..." line once its guard is in place (and old tables swept)."""
    return any(line.startswith("probing ") for line in stderr.splitlines())


def _check_end(run, signum: int, ended_first: bool, problem) -> None:
    """How the run ended: its verdict if it finished first, else as the contract says for the signal."""
    if "Traceback" in run.stderr:
        problem("a traceback")
    if ended_first or (run.returncode in VERDICT_CODES and signum != signal.SIGKILL):
        if run.returncode not in VERDICT_CODES:
            problem(f"exit {run.returncode} without a signal")
    elif signum == signal.SIGKILL:
        if run.returncode != -signal.SIGKILL:
            problem(f"exit {run.returncode} after SIGKILL")
    else:
        expected = (128 + signum, -signum)  # -signum: killed by the default action before Python's handlers
        if run.returncode not in expected:
            problem(f"exit {run.returncode}, expected one of {expected}")
        elif run.returncode > 0:  # progress lines may come first (the TTL sweeps'); the end is one line
            lines = run.stderr.splitlines()
            if not lines or lines[-1] != MESSAGES[signum]:
                problem(f"stderr ends {lines[-1:]!r}, expected {MESSAGES[signum]!r}")


def cycle(lab: Lab, faults: Faults, rnd: random.Random, max_delay: float = 2.5) -> None:
    target = rnd.choice(sorted(TARGETS))
    signum = rnd.choice(SIGNALS)
    delay = rnd.uniform(0.0, LATEST_SIGNAL.get(target, max_delay))
    before = set(guard_tables(lab))
    proc = start_probe(lab, TARGETS[target](lab))
    try:
        time.sleep(delay)  # the random moment of the fault
        ended_first = proc.poll() is not None
        if not ended_first:
            proc.send_signal(signum)
        run = finish(proc, timeout=FINISH_TIMEOUT)
    finally:
        reap(proc)
    faults.runs += 1
    command = (target if target in ("trace", "batch") else "check") + (" over IPv6" if target.endswith("-ipv6") else "")
    faults.by_command[command] = faults.by_command.get(command, 0) + 1
    started = _guard_started(run.stderr)
    # A signal in CPython's own start-up (site, .pth files), before a line of probe runs: the
    # interpreter's "Fatal Python error" and exit 1. Nothing of probe's exists yet to clean up.
    in_python_start = "Fatal Python error: init_import_site" in run.stderr and not started
    when = "after" if ended_first else ("python-start" if in_python_start else "mid" if started else "before")
    key = (signal.Signals(signum).name, when)
    faults.signalled[key] = faults.signalled.get(key, 0) + 1
    where = f"run {faults.runs}: {target}, {key[0]} after {delay:.3f} s ({when})"

    def problem(text: str) -> None:
        faults.problems.append(f"{where}: {text}\n{run.describe()}")

    if not in_python_start:  # else only the tables are checked, below
        _check_end(run, signum, ended_first, problem)

    after = set(guard_tables(lab))
    if started and before & after:
        problem(f"a run got its guard, yet dead runs' tables are still there: {sorted(before & after)}")
    new = after - before
    killed_mid = signum == signal.SIGKILL and not ended_first
    if new and not killed_mid:
        problem(f"guard tables left behind: {sorted(new)}")
    elif len(new) > 1:
        problem(f"more than its own table left: {sorted(new)}")
    faults.stale = after  # SIGKILL cannot clean up: the next run that gets its guard must sweep these


def settle(lab: Lab, faults: Faults) -> None:
    """One ordinary run at the end: it must sweep whatever killed runs left, and leave nothing."""
    run = finish(start_probe(lab, TARGETS["clean"](lab)), timeout=FINISH_TIMEOUT)
    if run.returncode != 0:
        faults.problems.append(f"the settling run failed\n{run.describe()}")
    faults.stale = set(guard_tables(lab))
    if faults.stale:
        faults.problems.append(f"tables left after the settling run: {sorted(faults.stale)}")
