#!/usr/bin/env python3
"""How long does a batch's history take, on SQLite and on PostgreSQL, and do writers at once
lose anything?

1. One batch of N results (default 1,000) from one vantage, into a history that already holds
   a previous run of the same targets: the time to open it (schema check and the previous
   verdicts, one query), to compare and keep the N results, and to write them (run, results,
   latest verdicts, one transaction). The median of R repetitions (default 5), for a SQLite
   file, PostgreSQL over its unix socket and PostgreSQL over TCP on 127.0.0.1 with a password.
2. W writers at once (default 8 processes), each a batch of N results from its own vantage,
   into one PostgreSQL database and one SQLite file: each writer keeps its results, then all
   write from the same moment (a barrier); the median and the slowest write, and the rows
   found against the rows written.

PostgreSQL is a throwaway cluster with its default, durable settings (tests/history/pgcluster.py:
initdb in a temporary directory, a free port, removed at the end); nothing else is touched. As root or not, from the
repository root:  python3 bench/history_speed.py
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "tests", "history")]

from pgcluster import running  # noqa: E402

from probe.jobs.store import History  # noqa: E402


def document(n: int, verdict: str) -> dict:
    return {"target": {"url": f"http://t{n}.example/", "address": "198.51.100.80", "port": 80},
            "verdict": verdict, "direction": None, "hop": None, "rtt_ms": 50.4,
            "explanation": "The server answered the request; nothing in between interfered."}


def one_batch(location: str, vantage: str, count: int, verdict: str = "clean") -> tuple[float, float, float]:
    started = time.perf_counter()
    history = History(location, vantage)
    opened = time.perf_counter()
    for n in range(count):
        history.record(f"http://t{n}.example/", document(n, verdict), 0)
    kept = time.perf_counter()
    history.close(0)
    return opened - started, kept - opened, time.perf_counter() - kept


def timed(location: str, count: int, repeat: int) -> dict:
    one_batch(location, "bench", count, "server-reset")  # the previous run every later one compares with
    runs = [one_batch(location, "bench", count, ("clean", "server-reset")[n % 2]) for n in range(repeat)]
    return {what: statistics.median(run[i] for run in runs) for i, what in enumerate(("open", "keep", "write"))}


def _writer(location: str, vantage: str, count: int, barrier, times) -> None:
    history = History(location, vantage)
    for n in range(count):
        history.record(f"http://t{n}.example/", document(n, "clean"), 0)
    barrier.wait()  # every writer has its results: now all write at once
    started = time.perf_counter()
    history.close(0)
    times.put(time.perf_counter() - started)


def at_once(location: str, writers: int, count: int) -> tuple[float, float, int]:
    """The slowest and the median writer's write (each from the same moment), and the rows found."""
    context = multiprocessing.get_context("spawn")
    barrier, times = context.Barrier(writers), context.Queue()
    History(location, "setup").close(0)  # the schema exists: what is timed is the writes
    procs = [context.Process(target=_writer, args=(location, f"site-{n}", count, barrier, times))
             for n in range(writers)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join()
    if any(proc.exitcode for proc in procs):
        raise SystemExit(f"a writer failed: exit codes {[proc.exitcode for proc in procs]}")
    seconds = [times.get() for _ in procs]
    return max(seconds), statistics.median(seconds), rows(location)


def rows(location: str) -> int:
    if location.startswith("postgresql://"):
        import psycopg

        with psycopg.connect(location) as db:
            return db.execute("SELECT COUNT(*) FROM results").fetchone()[0]
    import sqlite3

    with sqlite3.connect(location) as db:
        return db.execute("SELECT COUNT(*) FROM results").fetchone()[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--writers", type=int, default=8)
    args = parser.parse_args()
    with running(durable=True) as cluster, tempfile.TemporaryDirectory(prefix="probe-history-bench-") as work:
        locations = {"SQLite file": os.path.join(work, "h.sqlite"),
                     "PostgreSQL, unix socket": cluster.socket_url(cluster.new_database("bench_socket")),
                     "PostgreSQL, TCP 127.0.0.1": cluster.tcp_url(cluster.new_database("bench_tcp"))}
        print(f"one batch of {args.results} results, median of {args.repeat} (seconds)")
        print(f"{'history':28} {'open':>8} {'keep':>8} {'write':>8}")
        for name, location in locations.items():
            times = timed(location, args.results, args.repeat)
            print(f"{name:28} {times['open']:8.3f} {times['keep']:8.3f} {times['write']:8.3f}")
        print(f"\n{args.writers} writers at once, {args.results} results each")
        for name, location in (("SQLite file", os.path.join(work, "at-once.sqlite")),
                               ("PostgreSQL, unix socket", cluster.socket_url(cluster.new_database("at_once")))):
            slowest, median, found = at_once(location, args.writers, args.results)
            print(f"{name:28} write {median:.3f} s median, {slowest:.3f} s slowest; "
                  f"{found} of {args.writers * args.results} rows")


if __name__ == "__main__":
    main()
