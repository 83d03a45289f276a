#!/usr/bin/env python3
"""What HTTPS costs `probe check` on a clean path: wall time of `check http://` and `check
https://`, interleaved in one run, against the goal of issue #14: at most one round trip more,
plus 0.1 s.

Workload: the lab (4 routers, DELAY ms of path delay in the server's namespace, nginx on 80 and
443 with the lab's CA), `probe check URL --resolve ... --json` from the client namespace, RUNS
times each, alternating, with --linger 0 so that both end when their exchange ends (the default
linger, max(0.5 s, 3 round trips), is the same for both and would only add to each). The wall
time is the whole process, interpreter start and imports included, as a user waits for it. The
TLS handshake's own round trip is in the JSON too (rtt_ms is the TCP handshake's).

Run by hand as root from the repository root:  python3 bench/https_overhead.py [--runs 15] [--delay 50]
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

from netns.lab import Lab  # noqa: E402  (the lab lives beside the package, not in it)


def probe(lab: Lab, url: str, port: int) -> tuple[float, dict]:
    argv = ["ip", "netns", "exec", lab.client_ns, sys.executable, "-m", "probe", "check", url, "--json",
            "--linger", "0", "--no-locate", "--resolve", f"www.example.com:{port}:{lab.server_addr}",
            "--cacert", str(lab.ca_file)]
    started = time.perf_counter()
    result = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT)
    elapsed = time.perf_counter() - started
    document = json.loads(result.stdout)
    return elapsed, document


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--delay", type=float, default=50.0, help="path delay in ms (the round trip)")
    args = parser.parse_args()
    times: dict[str, list[float]] = {"http": [], "https": []}
    rtts, verdicts = [], set()
    with Lab(routers=4, delay_ms=args.delay) as lab:
        for _ in range(args.runs):
            for scheme, port in (("http", 80), ("https", 443)):
                elapsed, document = probe(lab, f"{scheme}://www.example.com/", port)
                times[scheme].append(elapsed)
                verdicts.add((scheme, document["verdict"], (document.get("tls") or {}).get("verified")))
                if document.get("rtt_ms") is not None:
                    rtts.append(document["rtt_ms"] / 1000)
    rtt = statistics.median(rtts)
    http, https = statistics.median(times["http"]), statistics.median(times["https"])
    print(f"workload: lab, 4 routers, {args.delay:.0f} ms path delay, {args.runs} runs each, interleaved, --linger 0")
    print(f"verdicts seen: {sorted(verdicts)}")
    print(f"median round trip (TCP handshake): {rtt * 1000:.1f} ms")
    print(f"check http://   median {http:.3f} s  (min {min(times['http']):.3f}, max {max(times['http']):.3f})")
    print(f"check https://  median {https:.3f} s  (min {min(times['https']):.3f}, max {max(times['https']):.3f})")
    budget = rtt + 0.1
    print(f"https - http: {https - http:.3f} s; the goal allows one round trip + 0.1 s = {budget:.3f} s: "
          f"{'met' if https - http <= budget else 'NOT met'}")


if __name__ == "__main__":
    main()
