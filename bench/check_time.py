#!/usr/bin/env python3
"""How long `probe check` takes on a clean path with the default linger, against the goal of
issue #17: at most two round trips, plus the linger, plus 0.3 s.

Workload: the lab (ROUTERS routers, DELAY ms of round trip made by the NFQUEUE delay line on the
server's side: this kernel has no netem), nginx, `probe check http://www.example.com/ --resolve
... --json` from the client namespace, RUNS times one after the other, with no --linger (the
default: 0.5 s or 3 round trips, whichever is longer). The wall time is the whole process,
interpreter start and imports included, as a user waits for it. The round trip is the median of
the runs' own `rtt_ms` (kernel timestamps of the SYN and the SYN-ACK); the linger the default's
rule applied to it.

Run by hand as root from the repository root, holding the lab lock:
    flock /tmp/probe-lab.lock python3 bench/check_time.py [--runs 15] [--delay 50]
Everything runs inside lab namespaces (documentation addresses only) and is torn down.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from netns.lab import HTTP_PORT, Lab, exit_on_signals  # noqa: E402  (the lab lives beside the package)

HOST = "www.example.com"
SLACK = 0.3  # seconds the goal allows beyond two round trips and the linger


def default_linger(rtt: float) -> float:
    """The linger `probe check` uses without --linger: 0.5 s or 3 round trips, whichever is longer."""
    return max(0.5, 3 * rtt)


def check_once(lab: Lab) -> tuple[float, dict | None, str]:
    """(wall seconds of the whole process, its JSON document or None, its stderr)."""
    argv = ["ip", "netns", "exec", lab.client_ns, sys.executable, "-m", "probe", "check", f"http://{HOST}/",
            "--json", "--resolve", f"{HOST}:{HTTP_PORT}:{lab.server_addr}"]
    started = time.perf_counter()
    result = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, timeout=120)
    elapsed = time.perf_counter() - started
    try:
        return elapsed, json.loads(result.stdout), result.stderr
    except ValueError:
        return elapsed, None, result.stderr


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--delay", type=float, default=50.0, help="round-trip delay in ms")
    parser.add_argument("--routers", type=int, default=4)
    args = parser.parse_args()
    times, rtts, verdicts = [], [], []
    with exit_on_signals(), Lab(routers=args.routers, delay_ms=args.delay) as lab:
        check_once(lab)  # the first run after the lab is up pays for cold caches (pyc files, ARP): not counted
        for _ in range(args.runs):
            elapsed, document, stderr = check_once(lab)
            if document is None:
                print(f"no JSON: {stderr.strip()}", file=sys.stderr)
                continue
            verdicts.append(document["verdict"])
            if document["verdict"] != "clean" or document.get("rtt_ms") is None:
                continue
            times.append(elapsed)
            rtts.append(document["rtt_ms"] / 1000)
    if not times:
        print(f"no clean run (verdicts: {verdicts})")
        return 1
    rtt = statistics.median(rtts)
    linger = default_linger(rtt)
    budget = 2 * rtt + linger + SLACK
    wall = statistics.median(times)
    print(f"workload: lab, {args.routers} routers, {args.delay:g} ms round trip (delay line), "
          f"`probe check http://{HOST}/ --json`, default linger, {len(times)} clean runs of {args.runs}")
    print(f"median round trip (TCP handshake, kernel timestamps): {rtt * 1000:.1f} ms; default linger {linger:.2f} s")
    print(f"check: median {wall:.3f} s (min {min(times):.3f}, max {max(times):.3f}), the whole process")
    print(f"goal: 2 round trips + linger + {SLACK} s = {budget:.3f} s: {'met' if wall <= budget else 'NOT met'} "
          f"(median {wall - budget:+.3f} s from it)")
    return 0 if wall <= budget else 2


if __name__ == "__main__":
    sys.exit(main())
