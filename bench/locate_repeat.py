#!/usr/bin/env python3
"""How steady is the hop that `check` (or `trace`) names? One box at one hop, many runs.

Builds a lab (client - 4 routers - server, 50 ms), starts one box (default: the block page at
hop 2), runs `probe check --json` (or `trace`) RUNS times against http://blocked.example/ and
prints how often each (verdict, direction, hop) came out, with the run times. Run it beside a
load (CI, another bench) to see how the trace holds up when the box answers late.

Run by hand, as root, from the repository root:
    python3 bench/locate_repeat.py [--box blockpage] [--hop 2] [--runs 60] [--command check]
Everything runs inside lab namespaces (documentation addresses only) and is torn down.
"""

from __future__ import annotations

import argparse
import collections
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from netns.boxes import BOXES  # noqa: E402
from netns.lab import Lab, exit_on_signals  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--box", default="blockpage", choices=BOXES)
    parser.add_argument("--hop", type=int, default=2, choices=range(1, 5))
    parser.add_argument("--runs", type=int, default=60)
    parser.add_argument("--command", default="check", choices=("check", "trace"))
    args = parser.parse_args()
    if not 1 <= args.runs <= 1000:
        parser.error("--runs must be from 1 to 1000")
    exit_on_signals()
    outcomes, seconds = collections.Counter(), []
    with Lab(routers=4, delay_ms=50) as lab:
        lab.spawn(lab.router_ns(args.hop), [sys.executable, "-m", f"netns.boxes.{args.box}"], name=args.box)
        argv = [sys.executable, "-m", "probe", args.command, "http://blocked.example/", "--resolve",
                f"blocked.example:80:{lab.server_addr}", "--json"]
        for _ in range(args.runs):
            started = time.monotonic()
            done = lab.exec(lab.client_ns, argv, check=False, timeout=120)
            seconds.append(time.monotonic() - started)
            try:
                document = json.loads(done.stdout)
                outcomes[(document["verdict"], document["direction"], document["hop"])] += 1
            except (json.JSONDecodeError, KeyError):
                outcomes[("no document", f"exit {done.returncode}", None)] += 1
    print(f"{args.command} against {args.box} at hop {args.hop}, {args.runs} runs, "
          f"median {statistics.median(seconds):.2f} s, max {max(seconds):.2f} s")
    for (verdict, direction, hop), count in outcomes.most_common():
        print(f"  {count:4d}  {verdict} / {direction or '-'} / hop {hop if hop is not None else '-'}")
    right = outcomes.get(next(iter(outcomes)), 0) if len(outcomes) == 1 else 0
    return 0 if right == args.runs and next(iter(outcomes))[2] == args.hop else 1


if __name__ == "__main__":
    sys.exit(main())
