#!/usr/bin/env python3
"""How close is `probe check`'s rtt_ms to ping's round trip over the same lab path?

For each configured delay, builds a lab (client - N routers - server, the delay line in the
server namespace), runs `ping -c COUNT` from the client and RUNS sequential
`probe check --json` runs against the lab's nginx, and prints one table row per delay:
ping avg/min, probe rtt_ms median/min/max, and probe minus ping. The goal is a difference
within 1 ms: both measure the same path, and the probe's RTT comes from kernel timestamps of
its SYN and the SYN-ACK, so Python's own slowness must not show in it.

Run by hand, as root, from the repository root:  python3 bench/rtt_vs_ping.py
Everything runs inside lab namespaces (documentation addresses only) and is torn down.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tabulate import tabulate  # noqa: E402

from netns.lab import HTTP_PORT, Lab, exit_on_signals  # noqa: E402

HOST = "www.example.com"


def ping(lab: Lab, count: int, interval: float) -> tuple[float, float]:
    """(avg, min) in ms of `ping -c count` from the client to the server."""
    out = lab.exec(lab.client_ns, ["ping", "-n", "-q", "-c", str(count), "-i", f"{interval:g}",
                                   lab.server_addr], timeout=count * interval + 30).stdout
    rtt_min, rtt_avg = re.search(r"= ([\d.]+)/([\d.]+)/", out).groups()
    return float(rtt_avg), float(rtt_min)


def probe_rtts(lab: Lab, runs: int) -> list[float]:
    """rtt_ms of `runs` sequential clean probes (a run that is not clean is reported and skipped)."""
    rtts = []
    for i in range(runs):
        result = lab.exec(lab.client_ns, [sys.executable, "-m", "probe", "check", f"http://{HOST}/",
                                          "--resolve", f"{HOST}:{HTTP_PORT}:{lab.server_addr}",
                                          "--json"], check=False, timeout=120)
        try:
            document = json.loads(result.stdout)
        except ValueError:
            print(f"  run {i + 1}: exit {result.returncode}, no JSON: {result.stderr.strip()}",
                  file=sys.stderr)
            continue
        if document["verdict"] != "clean" or document["rtt_ms"] is None:
            print(f"  run {i + 1}: verdict {document['verdict']}, skipped", file=sys.stderr)
            continue
        rtts.append(float(document["rtt_ms"]))
    return rtts


def measure(delay_ms: float, routers: int, runs: int, pings: int, interval: float) -> list:
    print(f"lab: {routers} routers, {delay_ms:g} ms round trip ...", file=sys.stderr, flush=True)
    started = time.monotonic()
    with Lab(routers=routers, delay_ms=delay_ms) as lab:
        ping_avg, ping_min = ping(lab, pings, interval)
        rtts = probe_rtts(lab, runs)
    print(f"  done in {time.monotonic() - started:.1f} s", file=sys.stderr, flush=True)
    if not rtts:
        return [f"{delay_ms:g}", f"{ping_avg:.3f}", f"{ping_min:.3f}", 0, "-", "-", "-", "-", "-"]
    median = statistics.median(rtts)
    return [f"{delay_ms:g}", f"{ping_avg:.3f}", f"{ping_min:.3f}", len(rtts), f"{median:.3f}",
            f"{min(rtts):.3f}", f"{max(rtts):.3f}", f"{median - ping_avg:+.3f}",
            f"{min(rtts) - ping_min:+.3f}"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--delays", default="50,20", help="round-trip delays in ms, comma separated")
    parser.add_argument("--routers", type=int, default=4)
    parser.add_argument("--runs", type=int, default=20, help="probe runs per delay")
    parser.add_argument("--pings", type=int, default=20, help="ping -c COUNT")
    parser.add_argument("--interval", type=float, default=0.2, help="ping -i SECONDS")
    args = parser.parse_args()
    rows = []
    with exit_on_signals():
        for delay in (float(d) for d in args.delays.split(",")):
            rows.append(measure(delay, args.routers, args.runs, args.pings, args.interval))
    headers = ["delay ms", "ping avg", "ping min", "probe n", "probe median", "probe min",
               "probe max", "median-avg", "min-min"]
    print(tabulate(rows, headers=headers, tablefmt="simple", disable_numparse=True))
    worst = max((abs(float(r[7])) for r in rows if r[7] != "-"), default=float("inf"))
    print(f"\ngoal: |probe median - ping avg| <= 1 ms: {'met' if worst <= 1.0 else 'NOT met'}"
          f" (worst {worst:.3f} ms)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
