#!/usr/bin/env python3
"""Signals at random moments of `probe check`, `trace` and `batch`, many times (issue #8: 50+ runs).

Builds the e2e tests' lab (client - 4 routers - server, 50 ms, a blackholed address), then runs
RUNS cycles of tests/e2e/faults.py: a probe (check of a clean server, a closed port with its TTL
sweeps or an unanswered SYN, over IPv4 or IPv6; a trace; a batch of twelve targets) gets
SIGINT, SIGTERM or SIGKILL after a random delay; each run must end as the
contract says (130/143 with one line, or its verdict if it finished first, no traceback), leave no
guard table unless SIGKILLed, and the next run that gets its guard must sweep a killed run's table.
Prints how many signals landed before the guard, mid-run and after the end, and every problem.

Run by hand, as root, from the repository root:  python3 bench/faults.py [--runs 60] [--seed N]
Everything runs inside lab namespaces (documentation addresses only) and is torn down.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "e2e")]

from e2ekit import BLACKHOLE_ADDR, BLACKHOLE_ADDR6, DELAY_MS, ROUTERS  # noqa: E402
from faults import Faults, cycle, settle  # noqa: E402

from netns.lab import Lab, exit_on_signals  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=60)
    parser.add_argument("--seed", type=int, default=int(time.time()))
    parser.add_argument("--max-delay", type=float, default=2.5, help="latest moment of a signal, seconds")
    args = parser.parse_args()
    if not 1 <= args.runs <= 10000:
        parser.error("--runs must be from 1 to 10000")
    exit_on_signals()
    rnd, faults = random.Random(args.seed), Faults()
    started = time.monotonic()
    with Lab(routers=ROUTERS, delay_ms=DELAY_MS) as lab:
        lab.exec(lab.router_ns(ROUTERS), ["ip", "route", "add", "blackhole", f"{BLACKHOLE_ADDR}/32"])
        lab.exec(lab.router_ns(ROUTERS), ["ip", "-6", "route", "add", "blackhole", f"{BLACKHOLE_ADDR6}/128"])
        for _ in range(args.runs):
            cycle(lab, faults, rnd, args.max_delay)
        settle(lab, faults)
    print(f"{faults.runs} runs, seed {args.seed}, {time.monotonic() - started:.0f} s: "
          + ", ".join(f"{count} {command}" for command, count in sorted(faults.by_command.items())))
    for (name, when), count in sorted(faults.signalled.items()):
        print(f"  {name:8} {when:7} {count}")
    print(f"tables left at the end: {sorted(faults.stale) or 'none'}")
    for problem in faults.problems:
        print("\nPROBLEM " + problem)
    print(f"{len(faults.problems)} problem(s)")
    return 1 if faults.problems else 0


if __name__ == "__main__":
    sys.exit(main())
