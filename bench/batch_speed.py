#!/usr/bin/env python3
"""How fast is `probe batch`, and is it right? 1,000 lab targets at once against the same
targets one by one, the floor the network allows, and peak memory at 10,000 targets.

In one lab (client - 4 routers - server, 50 ms round trip) with the fleet's boxes
(netns/fleet.py: clean, closed port, aborting application, block page, firewall, NAT'd VIP):

1. `probe batch` of N targets (default 1,000, the kinds in turn) at the default concurrency,
   with tcpdump on the client's interface: wall time; every target's verdict against its
   kind's; every packet tcpdump saw of the batch's flows, while each flow was being recorded,
   against the packets in the JSON lines (and a count of those that came after).
2. One by one: `probe check --json` on a sample (default 4 per kind, 24 runs), timed; the
   one-by-one time of all N is extrapolated from each kind's mean, and each run's verdict
   must be the batch's for that kind.
3. The floor: waves (N / concurrency, rounded up) times (RTT + linger), RTT the batch's median
   handshake, linger max(0.5 s, 3 RTT), as each exchange lingers.
4. Peak memory (max RSS of the probe process, from wait4) of a batch of 1,000 and of 10,000
   targets of the same mix, with --no-locate (flows waiting for a trace keep their packets
   until the end of the batch: that is memory per interfered target, not per target).

Run by hand, as root, from the repository root:  python3 bench/batch_speed.py
Everything runs inside lab namespaces (documentation addresses only) and is torn down.
"""

from __future__ import annotations

import argparse
import collections
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from netns import fleet  # noqa: E402
from netns.lab import Lab, exit_on_signals  # noqa: E402
from probe.network.admission import DEFAULT_CONCURRENCY  # noqa: E402


def probe_argv(lab: Lab, *args: str) -> list[str]:
    return ["ip", "netns", "exec", lab.client_ns, sys.executable, "-m", "probe", *args]


def timed_run(argv: list[str], timeout: float) -> tuple[float, int, int, str]:
    """(wall seconds, exit code, max RSS in KiB, stderr) of one process we start and reap."""
    started = time.monotonic()
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=err, stdin=subprocess.DEVNULL)
        deadline = started + timeout
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                proc.kill()
                os.wait4(proc.pid, 0)
                raise SystemExit(f"{' '.join(argv[-6:])} still running after {timeout} s")
            time.sleep(0.05)  # polling our own child's exit, bounded by the deadline
        proc.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        return time.monotonic() - started, proc.returncode, usage.ru_maxrss, err.read().decode(errors="replace")


def write_targets(path: Path, count: int) -> None:
    path.write_text("\n".join(fleet.target_lines(count)) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--targets", type=int, default=1000)
    parser.add_argument("--sample", type=int, default=4, help="probe check runs per kind, one by one")
    parser.add_argument("--memory-targets", type=int, default=10_000)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="batch-bench-"))
    with exit_on_signals(), Lab(routers=4, delay_ms=50.0) as lab:
        fleet.start_boxes(lab)
        listing, out = work / "targets.txt", work / "out.jsonl"
        write_targets(listing, args.targets)

        # 1. the batch, beside tcpdump
        with fleet.Tcpdump(lab, work / "tcpdump.pcap") as dump:
            batch_wall, code, batch_rss, stderr = timed_run(
                probe_argv(lab, "batch", str(listing), "--out", str(out)), timeout=600)
        documents = fleet.read_documents(out)
        wrong = [(d["line"], fleet.kind_of(d).name, fleet.outcome(d)) for d in documents
                 if fleet.outcome(d) != fleet.kind_of(d).expect]
        missed, invented, late = fleet.compare(documents, list(dump.records()))
        rtt = statistics.median(d["rtt_ms"] for d in documents if d["rtt_ms"] is not None) / 1000
        said = collections.defaultdict(set)
        for d in documents:
            said[fleet.kind_of(d).name].add(fleet.outcome(d))

        # 2. one by one, a sample of each kind
        per_kind, disagree = {}, []
        for kind in fleet.KINDS:
            times = []
            for _ in range(args.sample):
                argv = probe_argv(lab, "check", kind.url, "--resolve", kind.resolve, "--json")
                started = time.monotonic()
                done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
                times.append(time.monotonic() - started)
                import json

                outcome = fleet.outcome(json.loads(done.stdout))
                if {outcome} != said[kind.name]:
                    disagree.append((kind.name, outcome, sorted(said[kind.name], key=str)))
            per_kind[kind.name] = statistics.mean(times)
        counts = collections.Counter(fleet.kind_of(d).name for d in documents)
        one_by_one = sum(per_kind[name] * count for name, count in counts.items())

        # 3. the floor
        linger = max(0.5, 3 * rtt)
        waves = math.ceil(args.targets / DEFAULT_CONCURRENCY)
        floor = waves * (rtt + linger)

        # 4. memory, 1,000 against 10,000
        small, large = work / "small.txt", work / "large.txt"
        write_targets(small, 1000)
        write_targets(large, args.memory_targets)
        memory = {}
        for name, path, count in (("1,000", small, 1000), (f"{args.memory_targets:,}", large, args.memory_targets)):
            wall, _, rss, _ = timed_run(probe_argv(lab, "batch", str(path), "--out", os.devnull, "--no-locate"),
                                        timeout=1800)
            memory[name] = (count, wall, rss)

    print(f"lab: 4 routers, 50 ms round trip; {args.targets} targets, kinds: "
          + ", ".join(f"{name} {count}" for name, count in counts.items()))
    print(f"batch (concurrency {DEFAULT_CONCURRENCY}, exit {code}):  {batch_wall:7.1f} s wall"
          f"   (peak RSS {batch_rss / 1024:.0f} MiB)")
    print(f"one by one (extrapolated from {args.sample} probe check runs per kind, "
          f"{', '.join(f'{k} {v:.2f} s' for k, v in per_kind.items())}):  {one_by_one:7.1f} s")
    print(f"network floor ({waves} waves x (RTT {rtt * 1000:.1f} ms + linger {linger * 1000:.0f} ms)):  {floor:7.1f} s")
    print(f"verdicts: {len(documents) - len(wrong)}/{len(documents)} as expected for their kind; one-by-one runs "
          f"disagreeing with the batch: {len(disagree)} {disagree[:3]}")
    print(f"packets: tcpdump saw {len(fleet.capture_packets(dump.records(), documents))} of the batch's flows; "
          f"missing from the JSON lines while their flow was recorded: {len(missed)}; in the JSON lines but not on "
          f"the wire: {len(invented)}; arrived after their flow's recording ended (not recorded by check "
          f"either): {len(late)}")
    print(f"tcpdump: {' / '.join(dump.stats.strip().splitlines())}")
    for name, (count, wall, rss) in memory.items():
        print(f"peak memory, {name} targets (--no-locate): {rss / 1024:.1f} MiB  ({wall:.1f} s wall)")
    if wrong:
        print(f"wrong verdicts (first 5): {wrong[:5]}")
    print(f"stderr of the batch, last lines:\n{stderr.strip().splitlines()[-1] if stderr.strip() else ''}")


if __name__ == "__main__":
    main()
